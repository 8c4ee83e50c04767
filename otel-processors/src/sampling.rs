//! OpenTelemetry consistent probability sampling (OTEP 235), shared by the tail sampler's
//! `probabilistic` policy and the `probabilistic_sampler` processor so their decisions and
//! the thresholds they record agree: the same 56 random bits of a trace (`ot=rv:` or the
//! trace id's last 7 bytes), the same `th` encoding, and a recorded threshold that only
//! ever rises.

/// 2^56: the randomness and threshold range.
pub(crate) const MAX_ADJUSTED: u64 = 1 << 56;

/// The `ot` member's `th` and `rv` values of a `tracestate`, when present and well formed.
pub(crate) fn ot_values(trace_state: &str) -> (Option<u64>, Option<u64>) {
    let Some(ot) = trace_state
        .split(',')
        .find_map(|m| m.trim().strip_prefix("ot="))
    else {
        return (None, None);
    };
    let mut th = None;
    let mut rv = None;
    for kv in ot.split(';') {
        if let Some(t) = kv.strip_prefix("th:") {
            th = parse_th(t);
        } else if let Some(r) = kv.strip_prefix("rv:") {
            rv = (r.len() == 14)
                .then(|| u64::from_str_radix(r, 16).ok())
                .flatten();
        }
    }
    (th, rv)
}

/// A `th` value: 1 to 14 hex digits, the rest zeros.
pub(crate) fn parse_th(t: &str) -> Option<u64> {
    if t.is_empty() || t.len() > 14 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(t, 16).ok()?;
    Some(v << (4 * (14 - t.len())))
}

/// A threshold's `th` encoding: 14 hex digits, trailing zeros removed (`0` for always).
pub(crate) fn encode_th(t: u64) -> String {
    if t == 0 {
        return "0".into();
    }
    let hex = format!("{:014x}", t.min(MAX_ADJUSTED - 1));
    hex.trim_end_matches('0').to_string()
}

/// The 56 random bits of a trace: `ot=rv:` from `tracestate` when present, else the last
/// 7 bytes of the trace id (random under W3C Level 2).
pub(crate) fn randomness(trace_id: &[u8], trace_state: &str) -> u64 {
    ot_values(trace_state).1.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        if trace_id.len() == 16 {
            b[1..].copy_from_slice(&trace_id[9..16]);
        }
        u64::from_be_bytes(b)
    })
}

/// The rejection threshold for sampling probability `p` (0 < p <= 1), rounded to
/// `precision` significant hex digits (more for probabilities near 0 or 1), as the
/// OpenTelemetry Go sampling library computes it. `None` below the smallest probability.
pub(crate) fn threshold_with_precision(p: f64, precision: u32) -> Option<u64> {
    if !(p.is_finite() && p > 0.0 && p <= 1.0) || p < 1.0 / MAX_ADJUSTED as f64 {
        return None;
    }
    if p == 1.0 {
        return Some(0);
    }
    let exp = |x: f64| -> i32 {
        // frexp's exponent: x = f * 2^e with f in [0.5, 1).
        if x == 0.0 {
            0
        } else {
            x.abs().log2().floor() as i32 + 1
        }
    };
    let extra = |e: i32| (e / -4).max(0) as u32;
    let precision = (precision + extra(exp(p)).max(extra(exp(1.0 - p)))).min(14);
    let scaled = (p * MAX_ADJUSTED as f64).round() as u64;
    let mut t = MAX_ADJUSTED - scaled.min(MAX_ADJUSTED);
    let shift = 4 * (14 - precision);
    if shift != 0 {
        let half = 1u64 << (shift - 1);
        t = ((t + half) >> shift) << shift;
    }
    Some(t.min(MAX_ADJUSTED - 1))
}

/// The probability a threshold stands for.
pub(crate) fn probability(t: u64) -> f64 {
    (MAX_ADJUSTED - t.min(MAX_ADJUSTED)) as f64 / MAX_ADJUSTED as f64
}

/// `tracestate` with the `ot` member's `th` set to `th` (when it raises the one there, as
/// a threshold may only rise down a pipeline), `rv` set when given, and everything else
/// kept.
pub(crate) fn with_ot(trace_state: &str, th: Option<u64>, rv: Option<u64>) -> String {
    let mut ot_parts: Vec<String> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    let (old_th, _) = ot_values(trace_state);
    for member in trace_state
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        match member.strip_prefix("ot=") {
            Some(ot) => ot_parts.extend(
                ot.split(';')
                    .filter(|kv| {
                        let replaced = (th.is_some() && kv.starts_with("th:"))
                            || (rv.is_some() && kv.starts_with("rv:"));
                        !kv.is_empty() && !replaced
                    })
                    .map(String::from),
            ),
            None => others.push(member),
        }
    }
    if let Some(rv) = rv {
        ot_parts.insert(0, format!("rv:{rv:014x}"));
    }
    if let Some(th) = th {
        let th = old_th.map_or(th, |old| old.max(th));
        ot_parts.insert(0, format!("th:{}", encode_th(th)));
    }
    let mut out = String::new();
    if !ot_parts.is_empty() {
        out = format!("ot={}", ot_parts.join(";"));
    }
    for o in others {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(o);
    }
    out
}

/// `tracestate` without the `ot` member's `th` (an arriving threshold that the trace's
/// randomness contradicts).
pub(crate) fn without_th(trace_state: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for member in trace_state
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        match member.strip_prefix("ot=") {
            Some(ot) => {
                let rest: Vec<&str> = ot
                    .split(';')
                    .filter(|kv| !kv.is_empty() && !kv.starts_with("th:"))
                    .collect();
                if !rest.is_empty() {
                    out.push(format!("ot={}", rest.join(";")));
                }
            }
            None => out.push(member.to_string()),
        }
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_opentelemetry_encoding() {
        // 25 % is th:c, 50 % th:8, 100 % th:0 (the spec's examples).
        assert_eq!(encode_th(threshold_with_precision(0.25, 4).unwrap()), "c");
        assert_eq!(encode_th(threshold_with_precision(0.5, 4).unwrap()), "8");
        assert_eq!(encode_th(threshold_with_precision(1.0, 4).unwrap()), "0");
        // 10 %: 4 significant digits (the Go library adds one only under 1/16).
        assert_eq!(encode_th(threshold_with_precision(0.1, 4).unwrap()), "e666");
        assert_eq!(
            encode_th(threshold_with_precision(0.01, 4).unwrap()),
            "fd70a"
        );
        assert_eq!(parse_th("c"), Some(0xc0000000000000));
        assert_eq!(parse_th("xyz"), None);
        assert!((probability(parse_th("c").unwrap()) - 0.25).abs() < 1e-12);
        assert_eq!(threshold_with_precision(0.0, 4), None);
    }

    #[test]
    fn a_threshold_only_rises_and_the_rest_stays() {
        assert_eq!(with_ot("", Some(0x80000000000000), None), "ot=th:8");
        // A lower one does not replace a higher one already there.
        assert_eq!(
            with_ot(
                "ot=th:c;rv:abcdef01234567,vendor=x",
                Some(0x80000000000000),
                None
            ),
            "ot=th:c;rv:abcdef01234567,vendor=x"
        );
        assert_eq!(
            with_ot("vendor=x", Some(0xe0000000000000), Some(0x123)),
            "ot=th:e;rv:00000000000123,vendor=x"
        );
        assert_eq!(
            without_th("ot=th:8;rv:abcdef01234567,v=1"),
            "ot=rv:abcdef01234567,v=1"
        );
        assert_eq!(without_th("ot=th:8"), "");
    }

    #[test]
    fn randomness_prefers_rv() {
        let mut id = [0u8; 16];
        id[9..].copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde]);
        assert_eq!(randomness(&id, ""), 0x123456789abcde);
        assert_eq!(
            randomness(&id, "ot=th:8;rv:ffffffffffffff"),
            0xffffffffffffff
        );
    }
}
