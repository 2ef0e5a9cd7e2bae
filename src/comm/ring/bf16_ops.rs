//! The bf16 wire's arithmetic on slices (bf16 as u16 bits), written as
//! plain loops the compiler vectorizes, and compiled twice: for the
//! baseline x86-64 (SSE2) and for AVX2, chosen at run time. Conversion is
//! most of a bf16 hop's work; AVX2 makes it about 2.5× faster here.

/// The f32 value of bf16 bits (exact).
#[inline(always)]
fn wide(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// `x` rounded to bf16, to nearest even; NaN stays NaN (quiet). The
/// same bits as `half::bf16::from_f32` (tested below).
#[inline(always)]
pub(super) fn narrow(x: f32) -> u16 {
    let b = x.to_bits();
    let nearest = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    (if x.is_nan() {
        (b >> 16) | 0x40
    } else {
        nearest
    }) as u16
}

/// Defines `pub fn $name(args)` running `$body` with AVX2 when the CPU
/// has it, else as compiled for the baseline.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub(super) fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                // `unsafe fn`, not a safe one: the crate's MSRV (1.85)
                // predates safe `#[target_feature]` functions.
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: this CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// `wire` ← bf16(wire + recv), added in f32.
    fn add_bf16(wire: &mut [u16], recv: &[u16]) {
        let n = wire.len().min(recv.len());
        let (wire, recv) = (&mut wire[..n], &recv[..n]);
        for i in 0..n {
            wire[i] = narrow(wide(wire[i]) + wide(recv[i]));
        }
    }
}

multiversion! {
    /// `wire` ← bf16(own + recv), all bf16, added in f32.
    fn sum_bf16(wire: &mut [u16], own: &[u16], recv: &[u16]) {
        let n = wire.len().min(own.len()).min(recv.len());
        let (wire, own, recv) = (&mut wire[..n], &own[..n], &recv[..n]);
        for i in 0..n {
            wire[i] = narrow(wide(own[i]) + wide(recv[i]));
        }
    }
}

multiversion! {
    /// `wire` ← bf16(own + recv), added in f32.
    fn add_f32(wire: &mut [u16], own: &[f32], recv: &[u16]) {
        let n = wire.len().min(own.len()).min(recv.len());
        let (wire, own, recv) = (&mut wire[..n], &own[..n], &recv[..n]);
        for i in 0..n {
            wire[i] = narrow(own[i] + wide(recv[i]));
        }
    }
}

multiversion! {
    /// `wire` ← bf16(own).
    fn round(wire: &mut [u16], own: &[f32]) {
        let n = wire.len().min(own.len());
        let (wire, own) = (&mut wire[..n], &own[..n]);
        for i in 0..n {
            wire[i] = narrow(own[i]);
        }
    }
}

multiversion! {
    /// `out` ← the f32 values of `wire`.
    fn widen(out: &mut [f32], wire: &[u16]) {
        let n = out.len().min(wire.len());
        let (out, wire) = (&mut out[..n], &wire[..n]);
        for i in 0..n {
            out[i] = wide(wire[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;

    #[test]
    fn narrow_rounds_like_half() {
        let special = [
            0.0f32,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0, // a tie: stays (even)
            1.0 + 3.0 / 256.0, // a tie: rounds up (to even)
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let spread = (0..2_000_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)));
        for x in special.into_iter().chain(spread) {
            let (got, want) = (narrow(x), bf16::from_f32(x).to_bits());
            if x.is_nan() {
                assert!(bf16::from_bits(got).is_nan(), "{x}");
            } else {
                assert_eq!(got, want, "{x:e} ({:#x})", x.to_bits());
            }
        }
        // The slice kernels agree with the scalar definitions.
        let own: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let recv: Vec<u16> = own
            .iter()
            .map(|v| bf16::from_f32(v.cos()).to_bits())
            .collect();
        let mut w = vec![0u16; own.len()];
        add_f32(&mut w, &own, &recv);
        for i in 0..own.len() {
            let want = bf16::from_f32(own[i] + bf16::from_bits(recv[i]).to_f32());
            assert_eq!(w[i], want.to_bits());
        }
        let mut w2 = recv.clone();
        add_bf16(&mut w2, &w);
        for i in 0..own.len() {
            let s = bf16::from_bits(recv[i]).to_f32() + bf16::from_bits(w[i]).to_f32();
            assert_eq!(w2[i], bf16::from_f32(s).to_bits());
        }
        let mut r = vec![0u16; own.len()];
        round(&mut r, &own);
        let mut back = vec![0f32; own.len()];
        widen(&mut back, &r);
        for i in 0..own.len() {
            assert_eq!(r[i], bf16::from_f32(own[i]).to_bits());
            assert_eq!(back[i], bf16::from_bits(r[i]).to_f32());
        }
    }
}
