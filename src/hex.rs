//! Lowercase hexadecimal text for digests, fingerprints and keys, written and read the same way
//! everywhere in the crate.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push(&mut out, bytes);
    out
}

/// Appends `bytes` as lowercase hex to `out`.
pub(crate) fn push(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

/// Writes `bytes` as lowercase hex into `out`, two digits per byte, as far as `out` reaches
/// (no allocation: for fixed-size ids).
pub(crate) fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Which letters [`decode_32`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Letters {
    /// Only `a`–`f`: the canonical form this crate writes (a file that must not change shape).
    Lowercase,
    /// `a`–`f` and `A`–`F`: hashes pasted in by people.
    AnyCase,
}

/// 64 hex digits as 32 bytes; `None` for any other length or character.
pub(crate) fn decode_32(text: &str, letters: Letters) -> Option<[u8; 32]> {
    decode(text.as_bytes(), letters)
}

/// `2 * N` hex digits as `N` bytes; `None` for any other length or character.
pub(crate) fn decode<const N: usize>(bytes: &[u8], letters: Letters) -> Option<[u8; N]> {
    if bytes.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if letters == Letters::AnyCase => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37)).collect();
        let text = encode(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(
            decode_32(&text, Letters::Lowercase).unwrap().to_vec(),
            bytes
        );
        let upper = text.to_ascii_uppercase();
        assert_eq!(decode_32(&upper, Letters::AnyCase).unwrap().to_vec(), bytes);
        if upper != text {
            assert_eq!(decode_32(&upper, Letters::Lowercase), None);
        }
        assert_eq!(decode_32(&text[..62], Letters::AnyCase), None);
        assert_eq!(
            decode_32(&format!("{}g", &text[..63]), Letters::AnyCase),
            None
        );
        assert_eq!(encode(&[0x00, 0xff, 0x0a]), "00ff0a");
    }
}
