//! Policies, compiled from configuration, and their evaluation on a buffered trace.

use std::collections::HashMap;
use std::sync::Arc;

use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use parking_lot::Mutex;
use regex::Regex;
use tokio::time::Instant;

use super::buffer::Held;
use super::config::{PolicyConfig, PolicyType};
use super::wire::{self, AnyRef};
use crate::condition::{Condition, SpanContext};
use crate::config::ConfigError;
use crate::filter::{ErrorMode, parse_all};

/// What one policy says about a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep it.
    Sampled,
    /// This policy would not keep it.
    NotSampled,
    /// An inverted match that keeps it.
    InvertSampled,
    /// An inverted match that refuses it (wins over `Sampled`).
    InvertNotSampled,
    /// A `drop` policy matched: refuse it whatever else says.
    Dropped,
    /// Evaluation failed; counts as not sampled.
    Error,
}

impl Decision {
    pub(crate) fn samples(self) -> bool {
        matches!(self, Self::Sampled | Self::InvertSampled)
    }
}

/// Combine policy decisions as the Collector does: drop wins, then an explicit
/// not-sampled from an inverted match, then any sampled.
pub(crate) fn combine(decisions: impl IntoIterator<Item = Decision>) -> bool {
    let (mut sampled, mut inverted_no, mut dropped) = (false, false, false);
    for d in decisions {
        match d {
            Decision::Dropped => dropped = true,
            Decision::InvertNotSampled => inverted_no = true,
            Decision::Sampled | Decision::InvertSampled => sampled = true,
            Decision::NotSampled | Decision::Error => {}
        }
    }
    !dropped && !inverted_no && sampled
}

/// Spans-per-second budget shared by every shard's copy of a policy.
#[derive(Debug)]
pub(crate) struct RateWindow {
    limit: u64,
    start: Instant,
    state: Mutex<(u64, u64)>, // (second, spent)
}

impl RateWindow {
    fn new(limit: u64, start: Instant) -> Arc<Self> {
        Arc::new(Self {
            limit,
            start,
            state: Mutex::new((0, 0)),
        })
    }

    /// Spend `n` if the current second has room.
    fn try_spend(&self, n: u64, now: Instant) -> bool {
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut s = self.state.lock();
        if s.0 != second {
            *s = (second, 0);
        }
        if s.1 + n <= self.limit {
            s.1 += n;
            true
        } else {
            false
        }
    }
}

/// A token bucket of bytes, shared by every shard's copy.
#[derive(Debug)]
pub(crate) struct ByteBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl ByteBucket {
    fn try_take(&self, n: u64, now: Instant) -> bool {
        let mut s = self.state.lock();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= n as f64 {
            s.0 -= n as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum StringMatch {
    Exact(Vec<String>),
    Regex {
        res: Vec<Regex>,
        cache: HashMap<String, bool>,
        cap: usize,
    },
}

/// A compiled policy. Each shard owns a copy (regex caches are per shard); rate state is
/// shared through `Arc`s.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Always,
    Latency {
        lo: u64,
        hi: u64,
    },
    Status {
        codes: [bool; 3],
    },
    Probabilistic {
        threshold: u64,
        th: String,
    },
    Numeric {
        key: String,
        bit: Option<u8>,
        min: f64,
        max: f64,
        invert: bool,
    },
    Str {
        key: String,
        bit: Option<u8>,
        matcher: StringMatch,
        invert: bool,
    },
    Bool {
        key: String,
        bit: Option<u8>,
        value: bool,
        invert: bool,
    },
    SpanCount {
        min: usize,
        max: usize,
    },
    TraceState {
        key: String,
        values: Vec<String>,
    },
    Rate(Arc<RateWindow>),
    /// `rate_limiting` with `burst_capacity`: a token bucket of spans.
    Spans(Arc<ByteBucket>),
    Bytes(Arc<ByteBucket>),
    TraceFlags,
    Ottl {
        spans: Vec<Condition>,
        events: Vec<Condition>,
        mode: ErrorMode,
    },
    And(Vec<Compiled>),
    Not(Box<Compiled>),
    Drop(Vec<Compiled>),
    Composite(Vec<(Compiled, Arc<RateWindow>)>),
}

/// The OpenTelemetry consistent-sampling threshold for `percentage`: a trace is kept when
/// the 56 random bits of its id are at least this. Returns the threshold and its `th`
/// encoding (14 hex digits, trailing zeros removed).
pub(super) fn threshold(percentage: f64) -> (u64, String) {
    // Integer arithmetic on millionths of a percent, so 5 % is exactly 0xf3333333333333.
    const ONE: u128 = 1 << 56;
    let micro = (percentage.clamp(0.0, 100.0) * 1e6).round() as u128;
    let keep = (micro * ONE + 50_000_000) / 100_000_000;
    let t = (ONE - keep.min(ONE)) as u64;
    if t == 0 {
        return (0, "0".into());
    }
    let hex = format!("{:014x}", t.min((1 << 56) - 1));
    let trimmed = hex.trim_end_matches('0');
    (t, trimmed.to_string())
}

pub(super) use crate::sampling::randomness;

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    crate::condition::find_attr(attrs, key)
}

/// A decoded value seen the way the wire reader sees it.
fn any_ref(v: &AnyValue) -> AnyRef<'_> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => AnyRef::Str(s),
        Some(any_value::Value::BoolValue(b)) => AnyRef::Bool(*b),
        Some(any_value::Value::IntValue(i)) => AnyRef::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AnyRef::Double(*d),
        _ => AnyRef::Other,
    }
}

/// Attribute `key` of any span, or of a span's resource, passes `test`. Spans are read
/// encoded, without decoding.
fn any_attr(
    trace: &Held<'_>,
    key: &str,
    bit: Option<u8>,
    mut test: impl FnMut(AnyRef<'_>) -> bool,
) -> bool {
    // Ingest noted which indexed keys the trace has at all: most traces skip the scan.
    if bit.is_some_and(|b| trace.attr_mask & (1 << b) == 0) {
        return false;
    }
    trace.groups.iter().any(|(scoped, _)| {
        scoped
            .resource()
            .and_then(|r| find(&r.attributes, key))
            .is_some_and(|v| test(any_ref(v)))
    }) || trace.any_span(|_, span| wire::span_attr(span, key).is_some_and(&mut test))
}

fn invert(matched: bool, invert: bool) -> Decision {
    match (matched, invert) {
        (true, false) => Decision::Sampled,
        (false, false) => Decision::NotSampled,
        (true, true) => Decision::InvertNotSampled,
        (false, true) => Decision::InvertSampled,
    }
}

impl Compiled {
    /// Compile `p`; errors name `path` (`policies[2]`) and the setting.
    pub(crate) fn new(p: &PolicyConfig, path: &str, start: Instant) -> Result<Self, ConfigError> {
        let missing = |field: &str| {
            ConfigError::new(
                format!("{path}.{field}"),
                format!("a `{field}` policy needs its `{field}` settings"),
            )
        };
        let bad = |field: &str, msg: String| ConfigError::new(format!("{path}.{field}"), msg);
        let subs = |list: &[PolicyConfig], field: &str| -> Result<Vec<Compiled>, ConfigError> {
            if list.is_empty() {
                return Err(bad(field, "needs at least one sub-policy".into()));
            }
            list.iter()
                .enumerate()
                .map(|(i, s)| Compiled::new(s, &format!("{path}.{field}[{i}]"), start))
                .collect()
        };
        Ok(match p.kind {
            PolicyType::AlwaysSample => Self::Always,
            PolicyType::Latency => {
                let c = p.latency.as_ref().ok_or_else(|| missing("latency"))?;
                if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                    return Err(bad(
                        "latency.upper_threshold_ms",
                        "must be 0 or at least threshold_ms".into(),
                    ));
                }
                let hi = if c.upper_threshold_ms == 0 {
                    u64::MAX
                } else {
                    c.upper_threshold_ms * 1_000_000
                };
                Self::Latency {
                    lo: c.threshold_ms * 1_000_000,
                    hi,
                }
            }
            PolicyType::StatusCode => {
                let c = p
                    .status_code
                    .as_ref()
                    .ok_or_else(|| missing("status_code"))?;
                let mut codes = [false; 3];
                for (i, code) in c.status_codes.iter().enumerate() {
                    let idx = match code.as_str() {
                        "UNSET" => 0,
                        "OK" => 1,
                        "ERROR" => 2,
                        other => {
                            return Err(bad(
                                &format!("status_code.status_codes[{i}]"),
                                format!("`{other}`: use ERROR, OK or UNSET"),
                            ));
                        }
                    };
                    codes[idx] = true;
                }
                if c.status_codes.is_empty() {
                    return Err(bad(
                        "status_code.status_codes",
                        "list at least one code".into(),
                    ));
                }
                Self::Status { codes }
            }
            PolicyType::Probabilistic => {
                let c = p
                    .probabilistic
                    .as_ref()
                    .ok_or_else(|| missing("probabilistic"))?;
                if !(0.0..=100.0).contains(&c.sampling_percentage) {
                    return Err(bad(
                        "probabilistic.sampling_percentage",
                        "must be between 0 and 100".into(),
                    ));
                }
                let (threshold, th) = threshold(c.sampling_percentage);
                Self::Probabilistic { threshold, th }
            }
            PolicyType::NumericAttribute => {
                let c = p
                    .numeric_attribute
                    .as_ref()
                    .ok_or_else(|| missing("numeric_attribute"))?;
                if c.min_value.is_none() && c.max_value.is_none() {
                    return Err(bad(
                        "numeric_attribute",
                        "give min_value, max_value or both (the Collector refuses neither)".into(),
                    ));
                }
                let (min, max) = (
                    c.min_value.unwrap_or(f64::MIN),
                    c.max_value.unwrap_or(f64::MAX),
                );
                if min > max {
                    return Err(bad(
                        "numeric_attribute.min_value",
                        "must not exceed max_value".into(),
                    ));
                }
                Self::Numeric {
                    key: c.key.clone(),
                    bit: None,
                    min,
                    max,
                    invert: c.invert_match,
                }
            }
            PolicyType::StringAttribute => {
                let c = p
                    .string_attribute
                    .as_ref()
                    .ok_or_else(|| missing("string_attribute"))?;
                if c.values.is_empty() {
                    return Err(bad(
                        "string_attribute.values",
                        "list at least one value".into(),
                    ));
                }
                let matcher = if c.enabled_regex_matching {
                    let res = c
                        .values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            Regex::new(v).map_err(|e| {
                                bad(&format!("string_attribute.values[{i}]"), e.to_string())
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    StringMatch::Regex {
                        res,
                        cache: HashMap::new(),
                        cap: c.cache_max_size.unwrap_or(128),
                    }
                } else {
                    StringMatch::Exact(c.values.clone())
                };
                Self::Str {
                    key: c.key.clone(),
                    bit: None,
                    matcher,
                    invert: c.invert_match,
                }
            }
            PolicyType::BooleanAttribute => {
                let c = p
                    .boolean_attribute
                    .as_ref()
                    .ok_or_else(|| missing("boolean_attribute"))?;
                Self::Bool {
                    key: c.key.clone(),
                    bit: None,
                    value: c.value,
                    invert: c.invert_match,
                }
            }
            PolicyType::SpanCount => {
                let c = p.span_count.as_ref().ok_or_else(|| missing("span_count"))?;
                let max = if c.max_spans == 0 {
                    usize::MAX
                } else {
                    c.max_spans
                };
                if c.min_spans > max {
                    return Err(bad(
                        "span_count.min_spans",
                        "must not exceed max_spans".into(),
                    ));
                }
                Self::SpanCount {
                    min: c.min_spans,
                    max,
                }
            }
            PolicyType::TraceState => {
                let c = p
                    .trace_state
                    .as_ref()
                    .ok_or_else(|| missing("trace_state"))?;
                Self::TraceState {
                    key: c.key.clone(),
                    values: c.values.clone(),
                }
            }
            PolicyType::RateLimiting => {
                let c = p
                    .rate_limiting
                    .as_ref()
                    .ok_or_else(|| missing("rate_limiting"))?;
                if c.spans_per_second == 0 {
                    return Err(bad(
                        "rate_limiting.spans_per_second",
                        "must be positive".into(),
                    ));
                }
                match c.burst_capacity {
                    None => Self::Rate(RateWindow::new(c.spans_per_second, start)),
                    Some(0) => {
                        return Err(bad(
                            "rate_limiting.burst_capacity",
                            "must be positive".into(),
                        ));
                    }
                    // A token bucket of spans: the Bytes policy's bucket counts spans here.
                    Some(burst) => Self::Spans(Arc::new(ByteBucket {
                        rate: c.spans_per_second as f64,
                        burst: burst as f64,
                        state: Mutex::new((burst as f64, start)),
                    })),
                }
            }
            PolicyType::BytesLimiting => {
                let c = p
                    .bytes_limiting
                    .as_ref()
                    .ok_or_else(|| missing("bytes_limiting"))?;
                if c.bytes_per_second == 0 {
                    return Err(bad(
                        "bytes_limiting.bytes_per_second",
                        "must be positive".into(),
                    ));
                }
                let burst = c.burst_capacity.unwrap_or(c.bytes_per_second) as f64;
                Self::Bytes(Arc::new(ByteBucket {
                    rate: c.bytes_per_second as f64,
                    burst,
                    state: Mutex::new((burst, start)),
                }))
            }
            PolicyType::TraceFlags => Self::TraceFlags,
            PolicyType::OttlCondition => {
                let c = p
                    .ottl_condition
                    .as_ref()
                    .ok_or_else(|| missing("ottl_condition"))?;
                let spans = parse_all(&format!("{path}.ottl_condition.span"), &c.span)?;
                let events = parse_all(&format!("{path}.ottl_condition.spanevent"), &c.spanevent)?;
                if spans.is_empty() && events.is_empty() {
                    return Err(bad(
                        "ottl_condition",
                        "give at least one span or spanevent condition".into(),
                    ));
                }
                Self::Ottl {
                    spans,
                    events,
                    mode: c.error_mode,
                }
            }
            PolicyType::And => Self::And(subs(
                &p.and.as_ref().ok_or_else(|| missing("and"))?.and_sub_policy,
                "and.and_sub_policy",
            )?),
            PolicyType::Drop => Self::Drop(subs(
                &p.drop
                    .as_ref()
                    .ok_or_else(|| missing("drop"))?
                    .drop_sub_policy,
                "drop.drop_sub_policy",
            )?),
            PolicyType::Not => {
                let c = p.not.as_ref().ok_or_else(|| missing("not"))?;
                Self::Not(Box::new(Compiled::new(
                    &c.not_sub_policy,
                    &format!("{path}.not.not_sub_policy"),
                    start,
                )?))
            }
            PolicyType::Composite => {
                let c = p.composite.as_ref().ok_or_else(|| missing("composite"))?;
                let mut out = Vec::new();
                let total: u32 = c.rate_allocation.iter().map(|r| r.percent).sum();
                if total > 100 {
                    return Err(bad(
                        "composite.rate_allocation",
                        format!("shares add up to {total} %, more than 100"),
                    ));
                }
                for (i, name) in c.policy_order.iter().enumerate() {
                    let (j, sub) = c
                        .composite_sub_policy
                        .iter()
                        .enumerate()
                        .find(|(_, s)| s.name == *name)
                        .ok_or_else(|| {
                            bad(
                                &format!("composite.policy_order[{i}]"),
                                format!("no composite_sub_policy named `{name}`"),
                            )
                        })?;
                    let percent = c
                        .rate_allocation
                        .iter()
                        .find(|r| r.policy == *name)
                        .map_or(0, |r| r.percent);
                    let budget = c.max_total_spans_per_second * u64::from(percent) / 100;
                    let compiled = Compiled::new(
                        sub,
                        &format!("{path}.composite.composite_sub_policy[{j}]"),
                        start,
                    )?;
                    out.push((compiled, RateWindow::new(budget, start)));
                }
                if out.is_empty() {
                    return Err(bad(
                        "composite.policy_order",
                        "list the sub-policies in order".into(),
                    ));
                }
                Self::Composite(out)
            }
        })
    }

    /// Give every attribute policy in this tree a bit in the per-trace key mask (up to 64
    /// keys; policies past that scan without the shortcut).
    pub(crate) fn index_keys(&mut self, keys: &mut Vec<String>) {
        let mut assign = |key: &str, bit: &mut Option<u8>| {
            let i = keys.iter().position(|k| k == key).or_else(|| {
                (keys.len() < 64).then(|| {
                    keys.push(key.to_string());
                    keys.len() - 1
                })
            });
            *bit = i.map(|i| i as u8);
        };
        match self {
            Self::Numeric { key, bit, .. }
            | Self::Str { key, bit, .. }
            | Self::Bool { key, bit, .. } => assign(key, bit),
            Self::And(subs) | Self::Drop(subs) => subs.iter_mut().for_each(|p| p.index_keys(keys)),
            Self::Not(sub) => sub.index_keys(keys),
            Self::Composite(subs) => subs.iter_mut().for_each(|(p, _)| p.index_keys(keys)),
            _ => {}
        }
    }

    /// As [`Compiled::index_keys`], against a list that may not grow: the keys a running
    /// sampler already notes at ingest. A key not in it gets no bit, so its policy scans
    /// the trace (a trace buffered before the policy came has no bit for it either).
    pub(crate) fn index_known_keys(&mut self, keys: &[String]) {
        let assign = |key: &str, bit: &mut Option<u8>| {
            *bit = keys.iter().position(|k| k == key).map(|i| i as u8);
        };
        match self {
            Self::Numeric { key, bit, .. }
            | Self::Str { key, bit, .. }
            | Self::Bool { key, bit, .. } => assign(key, bit),
            Self::And(subs) | Self::Drop(subs) => {
                subs.iter_mut().for_each(|p| p.index_known_keys(keys));
            }
            Self::Not(sub) => sub.index_known_keys(keys),
            Self::Composite(subs) => subs.iter_mut().for_each(|(p, _)| p.index_known_keys(keys)),
            _ => {}
        }
    }

    /// The `th` value to record on kept spans, for a probabilistic policy.
    pub(crate) fn th(&self) -> Option<&str> {
        match self {
            Self::Probabilistic { th, .. } => Some(th),
            _ => None,
        }
    }

    /// Evaluate on a trace at time `now`.
    pub(crate) fn evaluate(&mut self, trace: &Held<'_>, now: Instant) -> Decision {
        match self {
            Self::Always => Decision::Sampled,
            Self::Latency { lo, hi } => {
                let d = trace.max_end.saturating_sub(trace.min_start);
                invert(d >= *lo && d <= *hi, false)
            }
            Self::Status { codes } => {
                let hit = (0..3).any(|c| codes[c] && trace.statuses & (1 << c) != 0);
                invert(hit, false)
            }
            Self::Probabilistic { threshold, .. } => invert(
                randomness(&trace.trace_id, &trace.first_trace_state) >= *threshold,
                false,
            ),
            Self::Numeric {
                key,
                bit,
                min,
                max,
                invert: inv,
            } => {
                let hit = any_attr(trace, key, *bit, |v| {
                    let n = match v {
                        AnyRef::Int(i) => i as f64,
                        AnyRef::Double(d) => d,
                        _ => return false,
                    };
                    n >= *min && n <= *max
                });
                invert(hit, *inv)
            }
            Self::Str {
                key,
                bit,
                matcher,
                invert: inv,
            } => {
                let hit = any_attr(trace, key, *bit, |v| {
                    let AnyRef::Str(s) = v else {
                        return false;
                    };
                    match matcher {
                        StringMatch::Exact(values) => values.iter().any(|x| x == s),
                        StringMatch::Regex { res, cache, cap } => {
                            if let Some(hit) = cache.get(s) {
                                return *hit;
                            }
                            let hit = res.iter().any(|re| re.is_match(s));
                            if cache.len() >= *cap {
                                cache.clear();
                            }
                            cache.insert(s.to_string(), hit);
                            hit
                        }
                    }
                });
                invert(hit, *inv)
            }
            Self::Bool {
                key,
                bit,
                value,
                invert: inv,
            } => {
                let hit = any_attr(trace, key, *bit, |v| v == AnyRef::Bool(*value));
                invert(hit, *inv)
            }
            Self::SpanCount { min, max } => {
                invert(trace.spans >= *min && trace.spans <= *max, false)
            }
            Self::TraceState { key, values } => {
                let hit = trace.any_span(|_, span| {
                    wire::span_trace_state(span)
                        .split(',')
                        .filter_map(|m| m.trim().split_once('='))
                        .any(|(k, v)| k == key && values.iter().any(|x| x == v))
                });
                invert(hit, false)
            }
            Self::Rate(window) => invert(window.try_spend(trace.spans as u64, now), false),
            Self::Spans(bucket) => invert(bucket.try_take(trace.spans as u64, now), false),
            Self::Bytes(bucket) => invert(bucket.try_take(trace.bytes as u64, now), false),
            Self::TraceFlags => invert(trace.any_sampled_flag, false),
            Self::Ottl {
                spans: conds,
                events,
                mode,
            } => {
                let mut error = false;
                let mut check = |c: &Condition, cx: &SpanContext<'_>| match c.eval(cx) {
                    Ok(b) => b,
                    Err(_) => {
                        error = true;
                        false
                    }
                };
                let decoded = trace.decode();
                let hit = decoded
                    .iter()
                    .flat_map(|(sc, spans)| spans.iter().map(move |s| (sc, s)))
                    .any(|(sc, span)| {
                        let cx = SpanContext {
                            span,
                            event: None,
                            resource: sc.resource(),
                            scope: sc.scope.as_ref(),
                        };
                        conds.iter().any(|c| check(c, &cx))
                            || span.events.iter().any(|e| {
                                let cx = SpanContext {
                                    span,
                                    event: Some(e),
                                    resource: sc.resource(),
                                    scope: sc.scope.as_ref(),
                                };
                                events.iter().any(|c| check(c, &cx))
                            })
                    });
                if error && *mode == ErrorMode::Propagate && !hit {
                    return Decision::Error;
                }
                invert(hit, false)
            }
            Self::And(subs) => invert(
                subs.iter_mut().all(|p| p.evaluate(trace, now).samples()),
                false,
            ),
            Self::Not(sub) => invert(!sub.evaluate(trace, now).samples(), false),
            Self::Drop(subs) => {
                if subs.iter_mut().all(|p| p.evaluate(trace, now).samples()) {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Self::Composite(subs) => {
                for (p, window) in subs.iter_mut() {
                    if p.evaluate(trace, now).samples() && window.try_spend(trace.spans as u64, now)
                    {
                        return Decision::Sampled;
                    }
                }
                Decision::NotSampled
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_opentelemetry_encoding() {
        assert_eq!(threshold(100.0), (0, "0".to_string()));
        assert_eq!(threshold(50.0).1, "8");
        assert_eq!(threshold(25.0).1, "c");
        assert_eq!(threshold(10.0).1, "e6666666666666");
        assert_eq!(threshold(5.0).1, "f3333333333333");
        assert_eq!(threshold(1.0).1, "fd70a3d70a3d71");
        assert_eq!(threshold(0.0).0, 1 << 56, "0 % keeps nothing");
    }

    #[test]
    fn randomness_prefers_rv() {
        let id = [
            0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde,
        ];
        assert_eq!(randomness(&id, ""), 0x123456789abcde);
        assert_eq!(
            randomness(&id, "ot=th:8;rv:ffffffffffffff,other=1"),
            0xffffffffffffff
        );
        assert!(!combine([Decision::Sampled, Decision::InvertNotSampled]));
        assert!(!combine([Decision::Sampled, Decision::Dropped]));
        assert!(combine([Decision::NotSampled, Decision::InvertSampled]));
        assert!(!combine([Decision::NotSampled, Decision::Error]));
    }
}
