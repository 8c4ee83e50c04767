//! Lowercase hex, as trace and span ids are written in W3C headers and OTLP/JSON.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append the lowercase hex form of `bytes` to `out`.
///
/// ```
/// let mut s = String::new();
/// otel_pipeline_core::hex::encode_to(&[0x0a, 0xff], &mut s);
/// assert_eq!(s, "0aff");
/// ```
pub fn encode_to(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
}

/// The lowercase hex form of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    encode_to(bytes, &mut s);
    s
}

/// The value of one lowercase hex digit, or `None` (upper case is not hex here: W3C ids
/// must be lowercase).
#[inline]
pub fn lower_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decode lowercase hex into `out`, which must be exactly half as long as `hex`.
/// Returns `false` (leaving `out` partly written) on any other character or length.
///
/// ```
/// let mut id = [0u8; 2];
/// assert!(otel_pipeline_core::hex::decode_lower(b"0aff", &mut id));
/// assert_eq!(id, [0x0a, 0xff]);
/// assert!(!otel_pipeline_core::hex::decode_lower(b"0AFF", &mut id));
/// ```
#[inline]
pub fn decode_lower(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    for (pair, byte) in hex.chunks_exact(2).zip(out.iter_mut()) {
        match (lower_digit(pair[0]), lower_digit(pair[1])) {
            (Some(h), Some(l)) => *byte = (h << 4) | l,
            _ => return false,
        }
    }
    true
}
