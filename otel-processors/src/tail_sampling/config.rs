//! Configuration of the tail sampler, in the Collector's `tail_sampling` shape.

use std::time::Duration;

use serde::Deserialize;

use crate::filter::ErrorMode;

fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d50k() -> usize {
    50_000
}
fn d100k() -> usize {
    100_000
}

/// Sizes of the decision caches that route late spans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as sampled (default 100 000).
    #[serde(default = "d100k")]
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled (default 100 000).
    #[serde(default = "d100k")]
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self {
            sampled_cache_size: d100k(),
            non_sampled_cache_size: d100k(),
        }
    }
}

/// The hand-off at shutdown (`handoff`): where a draining sampler sends the traces it
/// has not decided, and the decisions it has made, instead of deciding on partial data.
///
/// ```yaml
/// processors:
///   tail_sampling:
///     handoff:
///       exporter: loadbalancing/peers
///       accept_from: [gateway]         # the peers' auth.subject (docs/security.md)
/// exporters:
///   loadbalancing/peers:               # the agents' resolver, minus this gateway
///     protocol: { otlp: { tls: { insecure: true } } }
///     resolver: { k8s: { service: otel-gateway.observability } }
///     exclude_endpoints: ["${env:POD_IP}:4317"]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffConfig {
    /// The trace exporter, defined under `exporters`, that takes the hand-off: a
    /// `loadbalancing` exporter over the other gateways, so each trace reaches the owner
    /// the agents will route it to. In Rust, pass it with
    /// [`TailSampler::with_handoff`](super::TailSampler::with_handoff); this name is then
    /// unused.
    #[serde(default)]
    pub exporter: String,
    /// Also hand over the ids of traces already decided (the decision caches, newest
    /// first), so their late spans follow the decision at the new owner (default true).
    #[serde(default = "yes")]
    pub decisions: bool,
    /// Whose hand-off this sampler obeys: the authenticated subjects (`auth.subject`, set
    /// by the receiver's authenticator: a bearer token's name, a basic-auth user, an mTLS
    /// certificate's name) of the peer gateways. Hand-off markers from anyone else are
    /// ordinary attributes, counted, and decide nothing, so no client can drop a victim's
    /// trace by sending its id under `not_sampled`. `"*"` accepts any client: only where
    /// nothing but the gateways can reach the receiver (docs/security.md). Default: none.
    #[serde(default)]
    pub accept_from: Vec<String>,
}

impl HandoffConfig {
    /// Whether a batch from a client with authenticated `subject` may hand off.
    pub fn accepts(&self, subject: Option<&str>) -> bool {
        self.accept_from
            .iter()
            .any(|a| a == "*" || subject.is_some_and(|s| s == a))
    }
}

fn yes() -> bool {
    true
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            exporter: String::new(),
            decisions: true,
            accept_from: Vec::new(),
        }
    }
}

/// Configuration of the tail sampler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// How long to wait for a trace's spans before deciding (default 30 s).
    #[serde(default = "d30s", deserialize_with = "crate::config::duration")]
    pub decision_wait: Duration,
    /// Once the root span has arrived, decide after this long instead (default: off).
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub decision_wait_after_root_received: Option<Duration>,
    /// Most traces buffered (default 50 000).
    #[serde(default = "d50k")]
    pub num_traces: usize,
    /// Sizing hint for the buffer's tables (default 0: none).
    #[serde(default)]
    pub expected_new_traces_per_sec: usize,
    /// Most bytes buffered (OTLP-encoded span size; default 0: no byte bound).
    #[serde(default)]
    pub max_buffered_bytes: usize,
    /// A trace larger than this is decided at once on what has arrived (default 0: off).
    #[serde(default)]
    pub maximum_trace_size_bytes: usize,
    /// Hold buffered spans packed (default true): attributes that repeat across spans (a
    /// key, or a key with one of its usual values) are numbered in a dictionary per
    /// shard, and each span's trace id is held once per trace. The spans come back byte
    /// for byte. On the benches' spans this holds 0.41x of their OTLP-encoded size
    /// instead of 1.06x, and costs a dictionary lookup per attribute at ingest
    /// (`docs/benchmarks.md`); `false` spends less CPU and more memory. The byte limits
    /// count OTLP-encoded bytes either way.
    #[serde(default = "yes")]
    pub pack_spans: bool,
    /// Stop at the first policy that samples (default false: evaluate all).
    #[serde(default)]
    pub sample_on_first_match: bool,
    /// When the buffer is full, make senders wait instead of deciding the oldest traces
    /// early (default false).
    #[serde(default)]
    pub block_on_overflow: bool,
    /// On shutdown, drop (counted) instead of deciding what is buffered (default false).
    #[serde(default)]
    pub drop_pending_traces_on_shutdown: bool,
    /// Late-span routing.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Worker shards (default: one per core). Traces are sharded by trace id.
    #[serde(default)]
    pub shards: usize,
    /// The policies.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Hand buffered traces to their new owners at shutdown (default: off, decide them
    /// here).
    #[serde(default)]
    pub handoff: Option<HandoffConfig>,
    /// The `file_storage` extension that journals what the sampler holds, so a crash
    /// loses nothing acknowledged (default: none, memory only). The collector resolves
    /// the name; in code, use [`TailSampler::with_storage`](super::TailSampler::with_storage).
    #[serde(default)]
    pub storage: Option<String>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        Self {
            decision_wait: d30s(),
            decision_wait_after_root_received: None,
            num_traces: d50k(),
            expected_new_traces_per_sec: 0,
            max_buffered_bytes: 0,
            maximum_trace_size_bytes: 0,
            pack_spans: true,
            sample_on_first_match: false,
            block_on_overflow: false,
            drop_pending_traces_on_shutdown: false,
            decision_cache: DecisionCacheConfig::default(),
            shards: 0,
            policies: Vec::new(),
            handoff: None,
            storage: None,
        }
    }
}

/// Policy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// Sample everything.
    AlwaysSample,
    /// Trace duration (first start to last end) within bounds.
    Latency,
    /// Any span with one of the status codes.
    StatusCode,
    /// A fixed share, decided from the trace id.
    Probabilistic,
    /// A numeric attribute in a range.
    NumericAttribute,
    /// A string attribute among values (or matching regexes).
    StringAttribute,
    /// A boolean attribute with a value.
    BooleanAttribute,
    /// Span count in a range.
    SpanCount,
    /// A `tracestate` key with one of the values.
    TraceState,
    /// At most so many spans per second.
    RateLimiting,
    /// At most so many bytes per second.
    BytesLimiting,
    /// Any span whose W3C sampled flag is set.
    TraceFlags,
    /// OTTL conditions, as the filter processor's.
    OttlCondition,
    /// Every sub-policy samples.
    And,
    /// The sub-policy does not sample.
    Not,
    /// Drop the trace when every sub-policy samples it (drop wins over everything).
    Drop,
    /// Sub-policies with a share each of a total span rate.
    Composite,
}

/// One policy, in the Collector's shape: a `name`, a `type`, and the settings of that type
/// under the key of the same name (`latency: {threshold_ms: 2000}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, for telemetry (required at the top level).
    #[serde(default)]
    pub name: String,
    /// The policy type.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// Settings of `latency`.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// Settings of `status_code`.
    #[serde(default)]
    pub status_code: Option<StatusCodeConfig>,
    /// Settings of `probabilistic`.
    #[serde(default)]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// Settings of `numeric_attribute`.
    #[serde(default)]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// Settings of `string_attribute`.
    #[serde(default)]
    pub string_attribute: Option<StringAttributeConfig>,
    /// Settings of `boolean_attribute`.
    #[serde(default)]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// Settings of `span_count`.
    #[serde(default)]
    pub span_count: Option<SpanCountConfig>,
    /// Settings of `trace_state`.
    #[serde(default)]
    pub trace_state: Option<TraceStateConfig>,
    /// Settings of `rate_limiting`.
    #[serde(default)]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// Settings of `bytes_limiting`.
    #[serde(default)]
    pub bytes_limiting: Option<BytesLimitingConfig>,
    /// Settings of `ottl_condition`.
    #[serde(default)]
    pub ottl_condition: Option<OttlConditionConfig>,
    /// Settings of `and`.
    #[serde(default)]
    pub and: Option<AndConfig>,
    /// Settings of `not`.
    #[serde(default)]
    pub not: Option<NotConfig>,
    /// Settings of `drop`.
    #[serde(default)]
    pub drop: Option<DropConfig>,
    /// Settings of `composite`.
    #[serde(default)]
    pub composite: Option<CompositeConfig>,
}

impl PolicyConfig {
    /// A policy of type `kind` with no settings yet; set the matching field.
    pub fn new(name: impl Into<String>, kind: PolicyType) -> Self {
        Self {
            name: name.into(),
            kind,
            latency: None,
            status_code: None,
            probabilistic: None,
            numeric_attribute: None,
            string_attribute: None,
            boolean_attribute: None,
            span_count: None,
            trace_state: None,
            rate_limiting: None,
            bytes_limiting: None,
            ottl_condition: None,
            and: None,
            not: None,
            drop: None,
            composite: None,
        }
    }

    /// Keep traces with a span whose status is one of `codes`.
    ///
    /// ```
    /// use otel_processors::tail_sampling::{PolicyConfig, StatusCode, TailSamplingConfig};
    /// let config = TailSamplingConfig {
    ///     policies: vec![
    ///         PolicyConfig::status_code("errors", [StatusCode::Error]),
    ///         PolicyConfig::latency("slow", 2000),
    ///         PolicyConfig::probabilistic("rest", 5.0),
    ///     ],
    ///     ..TailSamplingConfig::default()
    /// };
    /// assert_eq!(config.policies[0].status_code.as_ref().unwrap().status_codes, ["ERROR"]);
    /// ```
    pub fn status_code(
        name: impl Into<String>,
        codes: impl IntoIterator<Item = StatusCode>,
    ) -> Self {
        let mut p = Self::new(name, PolicyType::StatusCode);
        p.status_code = Some(StatusCodeConfig {
            status_codes: codes.into_iter().map(|c| c.as_str().to_string()).collect(),
        });
        p
    }

    /// Keep traces that last at least `threshold_ms`.
    pub fn latency(name: impl Into<String>, threshold_ms: u64) -> Self {
        let mut p = Self::new(name, PolicyType::Latency);
        p.latency = Some(LatencyConfig {
            threshold_ms,
            upper_threshold_ms: 0,
        });
        p
    }

    /// Keep `percentage` (0 to 100) of traces, by their trace id.
    pub fn probabilistic(name: impl Into<String>, percentage: f64) -> Self {
        let mut p = Self::new(name, PolicyType::Probabilistic);
        p.probabilistic = Some(ProbabilisticConfig {
            sampling_percentage: percentage,
            hash_salt: None,
        });
        p
    }

    /// Keep every trace.
    pub fn always_sample(name: impl Into<String>) -> Self {
        Self::new(name, PolicyType::AlwaysSample)
    }
}

/// A span status, for [`PolicyConfig::status_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// `UNSET`.
    Unset,
    /// `OK`.
    Ok,
    /// `ERROR`.
    Error,
}

impl StatusCode {
    /// The name the configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "UNSET",
            Self::Ok => "OK",
            Self::Error => "ERROR",
        }
    }
}

/// `latency`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Lower bound, ms.
    pub threshold_ms: u64,
    /// Upper bound, ms (0: none).
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

/// `status_code`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// `ERROR`, `OK`, `UNSET`.
    pub status_codes: Vec<String>,
}

/// `probabilistic`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Percentage sampled, 0 to 100.
    pub sampling_percentage: f64,
    /// Accepted for compatibility and ignored: the decision uses the trace id's random
    /// bits, as OpenTelemetry's consistent probability sampling does, so it needs no salt.
    #[serde(default)]
    pub hash_salt: Option<String>,
}

/// `numeric_attribute`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Lower bound (inclusive).
    #[serde(default)]
    pub min_value: Option<f64>,
    /// Upper bound (inclusive).
    #[serde(default)]
    pub max_value: Option<f64>,
    /// Not sampled when it matches.
    #[serde(default)]
    pub invert_match: bool,
}

/// `string_attribute`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Values (exact, or regexes with `enabled_regex_matching`).
    pub values: Vec<String>,
    /// Treat values as regexes.
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Values remembered with their regex result (default 128).
    #[serde(default)]
    pub cache_max_size: Option<usize>,
    /// Not sampled when it matches.
    #[serde(default)]
    pub invert_match: bool,
}

/// `boolean_attribute`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Value.
    pub value: bool,
    /// Not sampled when it matches.
    #[serde(default)]
    pub invert_match: bool,
}

/// `span_count`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// At least.
    pub min_spans: usize,
    /// At most (0: none).
    #[serde(default)]
    pub max_spans: usize,
}

/// `trace_state`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// Key.
    pub key: String,
    /// Values.
    pub values: Vec<String>,
}

/// `rate_limiting`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Spans per second.
    pub spans_per_second: u64,
    /// Most spans in a burst. Given, the policy is a token bucket of this size refilled at
    /// `spans_per_second`; absent, each calendar second has `spans_per_second`.
    #[serde(default)]
    pub burst_capacity: Option<u64>,
}

/// `bytes_limiting`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BytesLimitingConfig {
    /// Bytes per second.
    pub bytes_per_second: u64,
    /// Bucket size (default: one second's worth).
    #[serde(default)]
    pub burst_capacity: Option<u64>,
}

/// `ottl_condition`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OttlConditionConfig {
    /// What an evaluation error does (`ignore`: the condition is false).
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Span conditions: sample when any is true for any span.
    #[serde(default)]
    pub span: Vec<String>,
    /// Span-event conditions.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// `and`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// Sub-policies.
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `not`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotConfig {
    /// The sub-policy.
    pub not_sub_policy: Box<PolicyConfig>,
}

/// `drop`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// Sub-policies.
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Total spans per second across sub-policies.
    pub max_total_spans_per_second: u64,
    /// Sub-policy names in evaluation order.
    pub policy_order: Vec<String>,
    /// Sub-policies (each needs a `name`).
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Share of the rate per sub-policy.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

/// One share of a composite's rate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// Sub-policy name.
    pub policy: String,
    /// Percent of `max_total_spans_per_second`.
    pub percent: u32,
}
