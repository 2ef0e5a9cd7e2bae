//! Counter-based random numbers: a value is a pure function of
//! (seed, stream, counter), so any rank can draw "the same" random number
//! without state or communication.

/// splitmix64's finaliser: a strong 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

pub fn hash3(seed: u64, stream: u64, counter: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ stream) ^ counter)
}

/// Uniform in [0, 1) with 53 random bits.
pub fn uniform(seed: u64, stream: u64, counter: u64) -> f64 {
    (hash3(seed, stream, counter) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal (Box-Muller on two uniforms of the counter pair).
pub fn normal(seed: u64, stream: u64, counter: u64) -> f64 {
    let u1 = uniform(seed, stream, counter.wrapping_mul(2)).max(1e-300);
    let u2 = uniform(seed, stream, counter.wrapping_mul(2).wrapping_add(1));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
