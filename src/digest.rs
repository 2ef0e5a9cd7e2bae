//! The one content hash of the program: SHA-256. Checkpoints record it in
//! hex; start-up checks across ranks and cache keys use its first 8 bytes.

use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first 8 bytes of SHA-256 over `parts`, each part preceded by its
/// length (so ["ab", "c"] and ["a", "bc"] differ).
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// [`hash64`] of an f32 buffer's bytes (little-endian).
pub fn hash64_f32(values: &[f32]) -> u64 {
    let mut h = Sha256::new();
    h.update((values.len() as u64).to_le_bytes());
    for chunk in values.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        h.update(&bytes);
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value_and_part_boundaries() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash64(&[b"ab", b"c"]), hash64(&[b"a", b"bc"]));
        assert_eq!(hash64_f32(&[1.0, 2.0]), hash64_f32(&[1.0, 2.0]));
        assert_ne!(hash64_f32(&[1.0, 2.0]), hash64_f32(&[2.0, 1.0]));
    }
}
