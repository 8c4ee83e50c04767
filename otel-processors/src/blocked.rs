//! Redaction's `blocked_values`: masking what the patterns match in a string, with a
//! cheap test first that rules a pattern out for most values.
//!
//! For each pattern, what every match must hold is read from its syntax: a minimum
//! length, and literal runs every match contains (`@` and `.` for an e-mail address,
//! `bearer` in any case for a bearer token). A value shorter than the minimum, or missing
//! one of the runs, cannot match, so the pattern's automaton is not run on it. Most
//! attribute values (methods, routes, hosts, numbers as text) are ruled out for every
//! pattern by a length check and a `memchr`.
//!
//! A leaf: `attributes` imports it.

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind};

/// A literal run every match contains; `fold` bytes match either ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Needle {
    bytes: Vec<u8>,
    fold: Vec<bool>,
}

impl Needle {
    fn found_in(&self, hay: &[u8]) -> bool {
        let (Some(&first), Some(&first_fold)) = (self.bytes.first(), self.fold.first()) else {
            return true;
        };
        let n = self.bytes.len();
        let matches_at = |i: usize| {
            hay[i..i + n]
                .iter()
                .zip(self.bytes.iter().zip(&self.fold))
                .all(|(h, (b, f))| {
                    if *f {
                        h.eq_ignore_ascii_case(b)
                    } else {
                        h == b
                    }
                })
        };
        let mut at = 0;
        while at + n <= hay.len() {
            let rest = &hay[at..=hay.len() - n];
            let next = if first_fold {
                memchr::memchr2(first.to_ascii_lowercase(), first.to_ascii_uppercase(), rest)
            } else {
                memchr::memchr(first, rest)
            };
            let Some(i) = next else { return false };
            if matches_at(at + i) {
                return true;
            }
            at += i + 1;
        }
        false
    }
}

/// What a value must have for one pattern to possibly match it.
#[derive(Debug, Clone, Default)]
struct Prefilter {
    min_len: usize,
    needles: Vec<Needle>,
}

impl Prefilter {
    /// Read from the pattern's syntax (a pattern regex-syntax cannot parse gets no
    /// prefilter: it is always run).
    fn of(pattern: &str) -> Self {
        let Ok(hir) = regex_syntax::parse(pattern) else {
            return Self::default();
        };
        let mut needles = Vec::new();
        required(&hir, &mut needles);
        needles.retain(|n: &Needle| !n.bytes.is_empty());
        Self {
            min_len: hir.properties().minimum_len().unwrap_or(0),
            needles,
        }
    }

    fn may_match(&self, s: &str) -> bool {
        s.len() >= self.min_len && self.needles.iter().all(|n| n.found_in(s.as_bytes()))
    }
}

/// One byte of a literal run: a literal byte, or an ASCII letter in either case (a class
/// of exactly its two cases, as `(?i)` writes a letter).
fn run_byte(hir: &Hir) -> Option<Vec<(u8, bool)>> {
    match hir.kind() {
        HirKind::Literal(lit) => Some(lit.0.iter().map(|b| (*b, false)).collect()),
        HirKind::Class(Class::Unicode(c)) => {
            let r = c.ranges();
            match r {
                [a, b] if a.start() == a.end() && b.start() == b.end() => {
                    let (x, y) = (a.start(), b.start());
                    (x.is_ascii_alphabetic() && x.eq_ignore_ascii_case(&y) && x != y)
                        .then(|| vec![(x as u8, true)])
                }
                _ => None,
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            let r = c.ranges();
            match r {
                [a, b] if a.start() == a.end() && b.start() == b.end() => {
                    let (x, y) = (a.start(), b.start());
                    (x.is_ascii_alphabetic() && x.eq_ignore_ascii_case(&y) && x != y)
                        .then(|| vec![(x, true)])
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Collect the literal runs every match of `hir` contains.
fn required(hir: &Hir, out: &mut Vec<Needle>) {
    match hir.kind() {
        HirKind::Capture(c) => required(&c.sub, out),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub, out),
        HirKind::Concat(items) => {
            let mut run = Needle {
                bytes: Vec::new(),
                fold: Vec::new(),
            };
            for item in items {
                match run_byte(item) {
                    Some(bytes) => {
                        for (b, f) in bytes {
                            run.bytes.push(b);
                            run.fold.push(f);
                        }
                    }
                    None => {
                        out.push(std::mem::replace(
                            &mut run,
                            Needle {
                                bytes: Vec::new(),
                                fold: Vec::new(),
                            },
                        ));
                        required(item, out);
                    }
                }
            }
            out.push(run);
        }
        _ => {
            if let Some(bytes) = run_byte(hir) {
                out.push(Needle {
                    fold: bytes.iter().map(|(_, f)| *f).collect(),
                    bytes: bytes.into_iter().map(|(b, _)| b).collect(),
                });
            }
        }
    }
}

/// The compiled `blocked_values`.
#[derive(Debug)]
pub(crate) struct Blocked {
    /// Each pattern, in the configured order, with what a value needs to match it.
    each: Vec<(Regex, Prefilter)>,
}

impl Blocked {
    /// Compile `patterns`; the error names the index of the one that does not compile.
    pub(crate) fn new(patterns: &[String]) -> Result<Self, (usize, String)> {
        let each = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p)
                    .map(|re| (re, Prefilter::of(p)))
                    .map_err(|e| (i, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { each })
    }

    /// Mask every match of every pattern in `s` with `****`, pattern by pattern in the
    /// configured order; whether any matched.
    pub(crate) fn mask(&self, s: &mut String) -> bool {
        let mut any = false;
        for (re, pre) in &self.each {
            if !pre.may_match(s) {
                continue;
            }
            if let std::borrow::Cow::Owned(masked) = re.replace_all(s, "****") {
                *s = masked;
                any = true;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::{Blocked, Prefilter};
    use regex::Regex;

    const GATEWAY: [&str; 4] = [
        "4[0-9]{12}(?:[0-9]{3})?",
        "5[1-5][0-9]{14}",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        r"(?i)bearer\s+[A-Za-z0-9._~+/-]+=*",
    ];

    #[test]
    fn the_prefilter_reads_what_every_match_needs() {
        let email = Prefilter::of(GATEWAY[2]);
        assert_eq!(email.min_len, 6);
        let needles: Vec<&[u8]> = email.needles.iter().map(|n| &n.bytes[..]).collect();
        assert_eq!(needles, [&b"@"[..], &b"."[..]]);
        let bearer = Prefilter::of(GATEWAY[3]);
        assert_eq!(bearer.needles.len(), 1);
        assert_eq!(bearer.needles[0].bytes.to_ascii_lowercase(), b"bearer");
        assert!(bearer.may_match("Authorization: BeArEr abc"));
        assert!(!bearer.may_match("Authorization: Basic abc"));
        // Alternations and optional parts require nothing.
        assert!(Prefilter::of("foo|bar").needles.is_empty());
        assert!(
            Prefilter::of("(?:abc)?x")
                .needles
                .iter()
                .all(|n| n.bytes == b"x")
        );
    }

    /// The prefilter never rules out a value the pattern matches: checked on values built
    /// from the patterns' own pieces, cut and mixed at random.
    #[test]
    fn the_prefilter_never_hides_a_match() {
        let patterns: Vec<&str> = GATEWAY
            .iter()
            .copied()
            .chain([
                r"(?i)secret[-_ ]?key\s*[:=]\s*\S+",
                r"\bpassword=\w+",
                "(?:ab|cd)ef",
                "x{2,}y",
                "(?i)straße",
                "k(?i:ey)",
                "^token:",
            ])
            .collect();
        let pieces = [
            "4",
            "5",
            "1",
            "0123456789",
            "@",
            ".",
            "com",
            "jane",
            "Bearer ",
            "bEARER\t",
            "abc",
            "=",
            "secret",
            "SECRET_key",
            ": ",
            "password=",
            "ef",
            "cd",
            "xx",
            "y",
            "STRASSE",
            "straße",
            "KEY",
            "kEy",
            "token:",
            " ",
            "ü",
            "é",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let compiled: Vec<(&str, Regex, Prefilter)> = patterns
            .iter()
            .map(|p| (*p, Regex::new(p).expect("valid"), Prefilter::of(p)))
            .collect();
        let mut checked = 0;
        for _ in 0..20_000 {
            let mut value = String::new();
            for _ in 0..1 + next() % 8 {
                value.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            for (p, re, pre) in &compiled {
                if re.is_match(&value) {
                    checked += 1;
                    assert!(pre.may_match(&value), "{p} matches {value:?}");
                }
            }
        }
        assert!(checked > 2_500, "{checked} matches exercised");
    }

    #[test]
    fn masking_follows_the_configured_order() {
        let blocked = Blocked::new(&GATEWAY.map(String::from)).expect("compiles");
        let mut s = "card 4111111111111111 for jane@example.com, Bearer abc.def".to_string();
        assert!(blocked.mask(&mut s));
        assert_eq!(s, "card **** for ****, ****");
        let mut plain = "GET /api/orders".to_string();
        assert!(!blocked.mask(&mut plain));
        assert_eq!(plain, "GET /api/orders");
        assert_eq!(Blocked::new(&["(".to_string()]).unwrap_err().0, 0);
    }
}
