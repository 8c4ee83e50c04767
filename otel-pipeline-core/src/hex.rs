//! Lowercase hex, as trace and span ids are written in W3C headers and OTLP/JSON.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append the lowercase hex form of `bytes` to `out`.
pub(crate) fn encode_to(bytes: &[u8], out: &mut String) {
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (i, b) in chunk.iter().enumerate() {
            buf[2 * i] = DIGITS[(b >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(b & 0x0f) as usize];
        }
        // Hex digits are ASCII.
        out.push_str(std::str::from_utf8(&buf[..2 * chunk.len()]).unwrap_or_default());
    }
}

/// The lowercase hex form of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    encode_to(bytes, &mut s);
    s
}

/// The value of one lowercase hex digit, or `None` (upper case is not hex here: W3C ids
/// must be lowercase).
#[inline]
pub(crate) fn lower_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Digit values of lowercase hex; 0xff marks every other byte.
const LOWER: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decode lowercase hex into `out`, which must be exactly half as long as `hex`.
/// Returns `false` (leaving `out` partly written) on any other character or length.
#[inline]
pub(crate) fn decode_lower(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    // Table lookups with one check at the end: no branch per digit.
    let mut bad = 0u8;
    for (pair, byte) in hex.chunks_exact(2).zip(out.iter_mut()) {
        let (h, l) = (LOWER[pair[0] as usize], LOWER[pair[1] as usize]);
        bad |= h | l;
        *byte = (h << 4) | (l & 0x0f);
    }
    bad & 0xf0 == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_lowercase_only() {
        let mut s = String::new();
        super::encode_to(&[0x0a, 0xff], &mut s);
        assert_eq!(s, "0aff");
        assert_eq!(super::encode(&[0u8; 40]).len(), 80);
        let mut id = [0u8; 2];
        assert!(super::decode_lower(b"0aff", &mut id));
        assert_eq!(id, [0x0a, 0xff]);
        assert!(!super::decode_lower(b"0AFF", &mut id));
        assert!(!super::decode_lower(b"0af", &mut id));
        assert_eq!(super::lower_digit(b'f'), Some(15));
        assert_eq!(super::lower_digit(b'F'), None);
    }
}
