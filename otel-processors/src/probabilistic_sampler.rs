//! The `probabilistic_sampler` processor: head sampling at the collector, span by span
//! (and log record by log record), consistent across collectors and with the tail
//! sampler, in the Collector's three modes.
//!
//! ```yaml
//! probabilistic_sampler:
//!   sampling_percentage: 10
//!   mode: proportional        # hash_seed (the default), proportional or equalizing
//!   sampling_precision: 4
//!   fail_closed: true
//! ```
//!
//! - **`hash_seed`** (the default, and the mode whenever `hash_seed` is set without a
//!   mode): FNV-1a of the seed and the trace id; 14 bits of it are compared with the
//!   percentage. Collectors of one tier must share the seed. A kept span without sampling
//!   information in its `tracestate` gets the threshold (`ot=th:`) and the randomness the
//!   hash stands for (`ot=rv:`), so later samplers stay consistent with it.
//! - **`proportional`** (OTEP 235): the trace's 56 random bits (`ot=rv:`, else the trace
//!   id's last 7 bytes) against the threshold of the arriving probability times this one:
//!   10 % of what arrives goes on, whatever was sampled before.
//! - **`equalizing`**: the same randomness against this probability's threshold: items
//!   already sampled to 10 % or less pass one for one, the rest are brought down to 10 %.
//!
//! Kept spans carry the threshold in `ot=th:` (only ever raised), so backends compute
//! adjusted counts, and the tail sampler's `probabilistic` policy, which reads the same
//! randomness and writes the same encoding, keeps a subset of what a lower threshold kept.
//! A span whose arriving threshold its own randomness contradicts has that threshold
//! removed. `sampling.priority` overrides: `0` drops the span, more keeps it.
//!
//! Logs: the record's trace id, or (`attribute_source: record`, or no trace id) the
//! `from_attribute` value hashed with the seed; `sampling_priority` names an attribute
//! holding a percentage for that record. Kept records carry `sampling.threshold` (and
//! `sampling.randomness` when hashed).
//!
//! A span or record with no randomness (an all-zero trace id and no attribute) is dropped
//! when `fail_closed` (default) and kept otherwise. Everything dropped is counted
//! (`otelcol_processor_dropped_spans{reason="sampled_out"}` or `"no_randomness"`), and
//! `otelcol_processor_probabilistic_sampler_count_traces_sampled{sampled}` counts decisions.

use std::sync::Arc;

use otel_pipeline_core::proto::collector::logs::v1::ExportLogsServiceRequest;
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use otel_pipeline_core::telemetry::Instrument;
use otel_pipeline_core::{
    Batch, BuildError, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError, Consumer,
    DropReason, Logs, Processor, Traces,
};
use serde::Deserialize;

use crate::condition::find_attr;
use crate::config::ConfigError;
use crate::sampling::{
    MAX_ADJUSTED, encode_th, ot_values, probability, randomness, threshold_with_precision, with_ot,
    without_th,
};

/// The sampling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// FNV-1a of the seed and the trace id.
    HashSeed,
    /// OTEP 235: the arriving probability times this one.
    Proportional,
    /// OTEP 235: at most this probability overall.
    Equalizing,
}

/// Where a log record's randomness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AttributeSource {
    /// The record's trace id (default).
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// The value of `from_attribute`.
    #[serde(rename = "record")]
    Record,
}

fn yes() -> bool {
    true
}

fn four() -> u32 {
    4
}

/// Configuration of the probabilistic sampler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticSamplerConfig {
    /// Percentage kept: 0 drops everything, 100 or more keeps everything.
    pub sampling_percentage: f32,
    /// The hash seed (`hash_seed` mode); collectors of one tier share it.
    #[serde(default)]
    pub hash_seed: u32,
    /// The mode; unset: `hash_seed`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Drop items without randomness (default true).
    #[serde(default = "yes")]
    pub fail_closed: bool,
    /// Hex digits of the recorded threshold, 1 to 14 (default 4).
    #[serde(default = "four")]
    pub sampling_precision: u32,
    /// Logs: where randomness comes from.
    #[serde(default)]
    pub attribute_source: AttributeSource,
    /// Logs: the attribute hashed for randomness.
    #[serde(default)]
    pub from_attribute: Option<String>,
    /// Logs: the attribute holding a record's own sampling percentage.
    #[serde(default)]
    pub sampling_priority: Option<String>,
}

const SAMPLED: Instrument = Instrument::counter(
    "otelcol_processor_probabilistic_sampler_count_traces_sampled",
    "{spans}",
    "Sampling decisions of the probabilistic sampler, by outcome.",
);

const SAMPLED_OUT: DropReason = DropReason::new("sampled_out");
const NO_RANDOMNESS: DropReason = DropReason::new("no_randomness");

/// What the sampler needs, checked and computed once.
#[derive(Debug, Clone)]
struct Sampler {
    mode: Mode,
    /// `None`: drop everything (0 %).
    ratio: Option<f64>,
    seed: u32,
    precision: u32,
    fail_closed: bool,
    /// `hash_seed`: the rejection threshold (precision 4) and the 14-bit acceptance bound.
    hash_threshold: u64,
    hash_accept: u64,
    /// `equalizing`: the rejection threshold.
    equal_threshold: u64,
    attribute_source: AttributeSource,
    from_attribute: Option<String>,
    sampling_priority: Option<String>,
}

const HASH_BUCKETS: u64 = 1 << 14;

/// 32-bit FNV-1a, continuing from `h`.
fn fnv1a_from(mut h: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// FNV-1a of the seed (4 bytes, little-endian) then `bytes`, as the Collector hashes.
fn fnv1a(seed: u32, bytes: &[u8]) -> u32 {
    fnv1a_from(fnv1a_from(0x811c_9dc5, &seed.to_le_bytes()), bytes)
}

/// The hash of `bytes` as 56 bits of randomness: the 14 bits compared with the
/// percentage, turned so that OTEP 235's `R >= T` makes the same decision.
fn hashed_randomness(seed: u32, bytes: &[u8]) -> (u64, u64) {
    let h32 = fnv1a(seed, bytes);
    let hashed = u64::from(h32) & (HASH_BUCKETS - 1);
    let rprime = HASH_BUCKETS - 1 - hashed;
    let unused = u64::from(h32 >> 14);
    let mixed = (unused ^ (unused << 10)) & ((1 << 28) - 1);
    (hashed, (rprime << 42) | (mixed << 14) | hashed)
}

/// One item's decision.
enum Decision {
    Keep {
        /// The tracestate (or threshold attribute) to record, if it changes.
        th: Option<u64>,
        rv: Option<u64>,
        clear_th: bool,
    },
    Drop(DropReason),
}

impl ProbabilisticSamplerConfig {
    fn compile(&self) -> Result<Sampler, ConfigError> {
        let pct = self.sampling_percentage;
        if !pct.is_finite() || pct < 0.0 {
            return Err(ConfigError::new(
                "sampling_percentage",
                "must be a number from 0 to 100",
            ));
        }
        if !(1..=14).contains(&self.sampling_precision) {
            return Err(ConfigError::new("sampling_precision", "must be 1 to 14"));
        }
        if self.attribute_source == AttributeSource::Record && self.from_attribute.is_none() {
            return Err(ConfigError::new(
                "from_attribute",
                "attribute_source: record needs the attribute to hash",
            ));
        }
        let mode = self.mode.unwrap_or(Mode::HashSeed);
        let ratio = (pct > 0.0).then(|| (f64::from(pct) / 100.0).min(1.0));
        let (mut hash_threshold, mut hash_accept, mut equal_threshold) = (0, HASH_BUCKETS, 0);
        if let Some(r) = ratio {
            let t = threshold_with_precision(r, 4).unwrap_or(MAX_ADJUSTED - 1);
            hash_threshold = t;
            hash_accept = (MAX_ADJUSTED - t + (1 << 41)) >> 42;
            equal_threshold =
                threshold_with_precision(r, self.sampling_precision).unwrap_or(MAX_ADJUSTED - 1);
        }
        Ok(Sampler {
            mode,
            ratio: ratio.filter(|_| !(mode == Mode::HashSeed && hash_accept == 0)),
            seed: self.hash_seed,
            precision: self.sampling_precision,
            fail_closed: self.fail_closed,
            hash_threshold,
            hash_accept,
            equal_threshold,
            attribute_source: self.attribute_source,
            from_attribute: self.from_attribute.clone(),
            sampling_priority: self.sampling_priority.clone(),
        })
    }
}

fn number(v: Option<&AnyValue>) -> Option<f64> {
    match v?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i as f64),
        any_value::Value::DoubleValue(d) => Some(*d),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Sampler {
    /// The decision for an item with this randomness source.
    fn decide(
        &self,
        trace_id: &[u8],
        trace_state: &str,
        hashed_bytes: Option<&[u8]>,
        ratio: Option<f64>,
    ) -> Decision {
        let Some(ratio) = ratio else {
            return Decision::Drop(SAMPLED_OUT);
        };
        let zero_id = trace_id.iter().all(|b| *b == 0);
        let (arriving_th, arriving_rv) = ot_values(trace_state);
        // Randomness hashed from bytes: hash_seed mode, or a log record's attribute.
        if self.mode == Mode::HashSeed || hashed_bytes.is_some() {
            let bytes = match hashed_bytes {
                Some(b) => b,
                None if zero_id => return self.no_randomness(),
                None => trace_id,
            };
            let (hashed, rnd) = hashed_randomness(self.seed, bytes);
            let accept = if ratio >= 1.0 {
                HASH_BUCKETS
            } else if (ratio - self.ratio.unwrap_or(ratio)).abs() < f64::EPSILON {
                self.hash_accept
            } else {
                let t = threshold_with_precision(ratio, 4).unwrap_or(MAX_ADJUSTED - 1);
                (MAX_ADJUSTED - t + (1 << 41)) >> 42
            };
            if hashed >= accept {
                return Decision::Drop(SAMPLED_OUT);
            }
            let th = if (ratio - self.ratio.unwrap_or(ratio)).abs() < f64::EPSILON {
                self.hash_threshold
            } else {
                threshold_with_precision(ratio, 4).unwrap_or(0)
            };
            // Sampling information already there is left alone.
            let fresh = arriving_th.is_none() && arriving_rv.is_none();
            return Decision::Keep {
                th: fresh.then_some(th),
                rv: fresh.then_some(rnd),
                clear_th: false,
            };
        }
        if zero_id && arriving_rv.is_none() {
            return self.no_randomness();
        }
        let r = randomness(trace_id, trace_state);
        // An arriving threshold the randomness contradicts is removed.
        let consistent_th = arriving_th.filter(|t| r >= *t);
        let clear_th = arriving_th.is_some() && consistent_th.is_none();
        let t = match self.mode {
            Mode::Equalizing if (ratio - self.ratio.unwrap_or(ratio)).abs() < f64::EPSILON => {
                self.equal_threshold
            }
            Mode::Equalizing => match threshold_with_precision(ratio, self.precision) {
                Some(t) => t,
                None => return Decision::Drop(SAMPLED_OUT),
            },
            _ => {
                let incoming = consistent_th.map_or(1.0, probability);
                match threshold_with_precision(incoming * ratio, self.precision) {
                    Some(t) => t,
                    // Below the smallest probability: not sampled.
                    None => return Decision::Drop(SAMPLED_OUT),
                }
            }
        };
        if r < t {
            return Decision::Drop(SAMPLED_OUT);
        }
        Decision::Keep {
            th: Some(t),
            rv: None,
            clear_th,
        }
    }

    fn no_randomness(&self) -> Decision {
        if self.fail_closed {
            Decision::Drop(NO_RANDOMNESS)
        } else {
            Decision::Keep {
                th: None,
                rv: None,
                clear_th: false,
            }
        }
    }

    /// Sample spans in place; returns (kept, dropped by reason).
    fn traces(&self, data: &mut ExportTraceServiceRequest, tally: &mut Tally) {
        for rs in &mut data.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain_mut(|span| {
                    let priority = number(find_attr(&span.attributes, "sampling.priority"));
                    let ratio = match priority {
                        Some(0.0) => None,
                        Some(_) => {
                            tally.kept += 1;
                            return true;
                        }
                        None => self.ratio,
                    };
                    match self.decide(&span.trace_id, &span.trace_state, None, ratio) {
                        Decision::Keep { th, rv, clear_th } => {
                            tally.kept += 1;
                            if clear_th {
                                span.trace_state = without_th(&span.trace_state);
                            }
                            if th.is_some() || rv.is_some() {
                                span.trace_state = with_ot(&span.trace_state, th, rv);
                            }
                            true
                        }
                        Decision::Drop(reason) => {
                            tally.drop(reason);
                            false
                        }
                    }
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        data.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    }

    /// Sample log records in place.
    fn logs(&self, data: &mut ExportLogsServiceRequest, tally: &mut Tally) {
        for rl in &mut data.resource_logs {
            for sl in &mut rl.scope_logs {
                sl.log_records.retain_mut(|r| {
                    let ratio = match self
                        .sampling_priority
                        .as_deref()
                        .and_then(|k| number(find_attr(&r.attributes, k)))
                    {
                        Some(p) if p <= 0.0 => None,
                        Some(p) => Some((p / 100.0).min(1.0)),
                        None => self.ratio,
                    };
                    let zero_id = r.trace_id.iter().all(|b| *b == 0);
                    let attr_bytes: Option<Vec<u8>> =
                        (self.attribute_source == AttributeSource::Record || zero_id)
                            .then(|| {
                                self.from_attribute.as_deref().and_then(|k| {
                                    find_attr(&r.attributes, k).map(|v| {
                                        crate::condition::as_string(v).into_owned().into_bytes()
                                    })
                                })
                            })
                            .flatten()
                            .filter(|b| !b.is_empty());
                    let hashed = attr_bytes.is_some();
                    match self.decide(&r.trace_id, "", attr_bytes.as_deref(), ratio) {
                        Decision::Keep { th, rv, .. } => {
                            tally.kept += 1;
                            let mut put = |k: &str, v: String| {
                                r.attributes.retain(|a| a.key != k);
                                r.attributes.push(KeyValue {
                                    key: k.into(),
                                    value: Some(AnyValue {
                                        value: Some(any_value::Value::StringValue(v)),
                                    }),
                                    ..KeyValue::default()
                                });
                            };
                            if let Some(th) = th {
                                put("sampling.threshold", encode_th(th));
                            }
                            if let (Some(rv), true) = (rv, hashed) {
                                put("sampling.randomness", format!("{rv:014x}"));
                            }
                            true
                        }
                        Decision::Drop(reason) => {
                            tally.drop(reason);
                            false
                        }
                    }
                });
            }
            rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
        }
        data.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    }
}

#[derive(Default)]
struct Tally {
    kept: usize,
    sampled_out: usize,
    no_randomness: usize,
}

impl Tally {
    fn drop(&mut self, reason: DropReason) {
        if reason == NO_RANDOMNESS {
            self.no_randomness += 1;
        } else {
            self.sampled_out += 1;
        }
    }

    fn publish(&self, telemetry: &ComponentTelemetry) {
        telemetry.add_dropped(SAMPLED_OUT, self.sampled_out);
        telemetry.add_dropped(NO_RANDOMNESS, self.no_randomness);
        telemetry
            .counter(&SAMPLED, &[("sampled", "true")])
            .add(self.kept as u64);
        telemetry
            .counter(&SAMPLED, &[("sampled", "false")])
            .add((self.sampled_out + self.no_randomness) as u64);
    }
}

/// The probabilistic sampler.
///
/// ```
/// use otel_pipeline_core::{Pipeline, testing::InMemoryExporter};
/// use otel_processors::probabilistic_sampler::{ProbabilisticSampler, ProbabilisticSamplerConfig};
/// let config: ProbabilisticSamplerConfig =
///     serde_yaml_ng::from_str("sampling_percentage: 10\nmode: proportional").unwrap();
/// let (exporter, _) = InMemoryExporter::new();
/// let pipeline = Pipeline::traces().processor(ProbabilisticSampler::new(config)).exporter(exporter);
/// assert!(pipeline.build().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ProbabilisticSampler {
    id: ComponentId,
    config: ProbabilisticSamplerConfig,
}

impl ProbabilisticSampler {
    /// A sampler with id `probabilistic_sampler`.
    pub fn new(config: ProbabilisticSamplerConfig) -> Self {
        Self {
            id: ComponentId::new("probabilistic_sampler"),
            config,
        }
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// The consumer built by [`ProbabilisticSampler`].
pub struct SamplerConsumer<S, N> {
    sampler: Arc<Sampler>,
    telemetry: Arc<ComponentTelemetry>,
    next: N,
    signal: std::marker::PhantomData<fn(S)>,
}

impl<S, N: std::fmt::Debug> std::fmt::Debug for SamplerConsumer<S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplerConsumer")
            .field("sampler", &self.sampler)
            .field("next", &self.next)
            .finish()
    }
}

macro_rules! sampler_signal {
    ($signal:ty, $run:ident) => {
        impl Processor<$signal> for ProbabilisticSampler {
            type Consumer<N: Consumer<$signal>> = SamplerConsumer<$signal, N>;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build<N: Consumer<$signal>>(
                self,
                next: N,
                ctx: &mut ComponentContext<'_>,
            ) -> Result<SamplerConsumer<$signal, N>, BuildError> {
                let sampler = self
                    .config
                    .compile()
                    .map_err(|e| ctx.invalid(e.path, e.message))?;
                Ok(SamplerConsumer {
                    sampler: Arc::new(sampler),
                    telemetry: ctx.telemetry(),
                    next,
                    signal: std::marker::PhantomData,
                })
            }
        }

        impl<N: Consumer<$signal>> Consumer<$signal> for SamplerConsumer<$signal, N> {
            async fn consume(
                &self,
                mut batch: Batch<$signal>,
            ) -> Result<(), ConsumeError<$signal>> {
                let mut tally = Tally::default();
                self.sampler.$run(batch.data_mut(), &mut tally);
                tally.publish(&self.telemetry);
                if batch.item_count() == 0 {
                    return Ok(());
                }
                self.next.consume(batch).await
            }
        }
    };
}

sampler_signal!(Traces, traces);
sampler_signal!(Logs, logs);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Sampler {
        serde_yaml_ng::from_str::<ProbabilisticSamplerConfig>(yaml)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn traces(n: usize, seed: u64) -> ExportTraceServiceRequest {
        otel_pipeline_core::testing::generate_traces(n, 1, seed)
    }

    fn run(s: &Sampler, data: &mut ExportTraceServiceRequest) -> Tally {
        let mut t = Tally::default();
        s.traces(data, &mut t);
        t
    }

    fn spans(data: &ExportTraceServiceRequest) -> Vec<&otel_pipeline_core::proto::trace::v1::Span> {
        data.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect()
    }

    #[test]
    fn fnv_is_the_published_fnv1a() {
        // The FNV-1a 32-bit test vectors (draft-eastlake-fnv): "a" and "foobar".
        assert_eq!(fnv1a_from(0x811c_9dc5, b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_from(0x811c_9dc5, b"foobar"), 0xbf9c_f968);
        // The seed goes first, little-endian.
        assert_eq!(
            fnv1a(0x0403_0201, b"a"),
            fnv1a_from(0x811c_9dc5, &[1, 2, 3, 4, b'a'])
        );
    }

    #[test]
    fn each_mode_keeps_about_its_share_and_records_the_threshold() {
        for mode in ["hash_seed", "proportional", "equalizing"] {
            let s = config(&format!("sampling_percentage: 25\nmode: {mode}"));
            let mut data = traces(20_000, 7);
            let tally = run(&s, &mut data);
            let kept = tally.kept as f64 / 20_000.0;
            assert!((kept - 0.25).abs() < 0.02, "{mode}: kept {kept}");
            assert_eq!(tally.kept + tally.sampled_out, 20_000);
            for span in spans(&data) {
                assert!(
                    span.trace_state.starts_with("ot=th:c"),
                    "{mode}: {}",
                    span.trace_state
                );
            }
        }
    }

    #[test]
    fn consistent_with_lower_probabilities_and_the_tail_samplers_threshold() {
        // What 10 % keeps, 25 % keeps too (the same randomness), in each mode.
        for mode in ["hash_seed", "proportional", "equalizing"] {
            let low = config(&format!("sampling_percentage: 10\nmode: {mode}"));
            let high = config(&format!("sampling_percentage: 25\nmode: {mode}"));
            let (mut a, mut b) = (traces(5_000, 3), traces(5_000, 3));
            run(&low, &mut a);
            run(&high, &mut b);
            let kept_high: std::collections::HashSet<_> =
                spans(&b).iter().map(|s| s.trace_id.clone()).collect();
            assert!(
                spans(&a).iter().all(|s| kept_high.contains(&s.trace_id)),
                "{mode}"
            );
        }
        // Proportional twice: 50 % of 50 % is 25 %, and the threshold says so.
        let half = config("sampling_percentage: 50\nmode: proportional");
        let mut data = traces(20_000, 11);
        run(&half, &mut data);
        let t = run(&half, &mut data);
        assert!((t.kept as f64 / 20_000.0 - 0.25).abs() < 0.02);
        assert!(spans(&data).iter().all(|s| s.trace_state == "ot=th:c"));
        // Equalizing after 10 %: everything passes, the threshold stays at 10 %'s.
        let ten = config("sampling_percentage: 10\nmode: equalizing");
        let mut data = traces(5_000, 5);
        run(&ten, &mut data);
        let before = spans(&data).len();
        let t = run(
            &config("sampling_percentage: 25\nmode: equalizing"),
            &mut data,
        );
        assert_eq!(t.kept, before);
        assert!(
            spans(&data)
                .iter()
                .all(|s| s.trace_state.starts_with("ot=th:e666"))
        );
        // The tail sampler's 5 % keeps a subset of what this 10 % kept.
        let (t5, _) = crate::tail_sampling::policy_threshold_for_tests(5.0);
        let mut data = traces(5_000, 9);
        run(
            &config("sampling_percentage: 10\nmode: proportional"),
            &mut data,
        );
        let all = traces(5_000, 9);
        let tail_kept = spans(&all)
            .iter()
            .filter(|s| randomness(&s.trace_id, &s.trace_state) >= t5)
            .count();
        let both = spans(&data)
            .iter()
            .filter(|s| randomness(&s.trace_id, &s.trace_state) >= t5)
            .count();
        assert_eq!(tail_kept, both);
    }

    #[test]
    fn priority_randomness_and_errors() {
        let s = config("sampling_percentage: 0");
        let mut data = traces(10, 1);
        let spans_mut = &mut data.resource_spans[0].scope_spans[0].spans;
        spans_mut[0].attributes.push(KeyValue {
            key: "sampling.priority".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(1)),
            }),
            ..KeyValue::default()
        });
        spans_mut[1].trace_id = vec![0; 16];
        let t = run(&s, &mut data);
        assert_eq!(
            (t.kept, t.sampled_out),
            (1, 9),
            "priority keeps one of a 0 % sampler"
        );
        // No randomness: dropped when fail_closed, kept otherwise.
        for (yaml, kept) in [
            ("sampling_percentage: 100\nmode: proportional", 0),
            (
                "sampling_percentage: 100\nmode: proportional\nfail_closed: false",
                1,
            ),
        ] {
            let mut data = traces(1, 1);
            data.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![0; 16];
            let t = run(&config(yaml), &mut data);
            assert_eq!(t.kept, kept, "{yaml}");
        }
        // An arriving threshold the randomness contradicts is removed.
        let mut data = traces(1, 1);
        let span = &mut data.resource_spans[0].scope_spans[0].spans[0];
        span.trace_state = "ot=th:fffffffffffff;rv:00000000000001".into();
        run(
            &config("sampling_percentage: 100\nmode: proportional"),
            &mut data,
        );
        assert_eq!(spans(&data)[0].trace_state, "ot=th:0;rv:00000000000001");
        assert!(
            serde_yaml_ng::from_str::<ProbabilisticSamplerConfig>("sampling_percentage: -1")
                .unwrap()
                .compile()
                .is_err()
        );
    }
}
