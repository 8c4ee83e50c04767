//! The tail sampler: buffer spans by trace id, wait until the trace is complete, then keep
//! or drop the whole trace by policy.
//!
//! ```yaml
//! tail_sampling:
//!   decision_wait: 10s
//!   decision_wait_after_root_received: 2s
//!   num_traces: 100000
//!   max_buffered_bytes: 536870912
//!   decision_cache: { sampled_cache_size: 100000, non_sampled_cache_size: 100000 }
//!   policies:
//!     - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
//!     - { name: slow, type: latency, latency: { threshold_ms: 2000 } }
//!     - { name: priority, type: string_attribute, string_attribute: { key: sampling.priority, values: [always_on] } }
//!     - { name: rest, type: probabilistic, probabilistic: { sampling_percentage: 5 } }
//! ```
//!
//! # How it decides
//! - A trace is decided `decision_wait` after its first span arrived, or
//!   `decision_wait_after_root_received` after its root span arrived, whichever is first.
//!   Each shard sleeps exactly until its next due trace (no whole-second ticks).
//! - Decisions combine as the Collector's: a `drop` policy wins, then an explicit
//!   not-sampled from an inverted match, then any sampled.
//! - The `probabilistic` policy decides from the trace id's 56 random bits (or `ot=rv`),
//!   so every replica and every rerun agrees; spans it alone keeps carry
//!   `ot=th:<threshold>` in `tracestate`, so backends can compute adjusted counts.
//!
//! # Memory
//! Spans are buffered **encoded** (protobuf bytes, about 1.06x their OTLP size instead of
//! about 3.6x decoded) and, by default, **packed** (`pack_spans`): attributes that repeat
//! across spans are numbered in a dictionary per shard and the trace id is held once per
//! trace, about 0.41x their OTLP size on the benches' spans, unpacked byte for byte when
//! read. A per-trace summary (times, statuses, flags, root) serves the cheap
//! policies; attribute and `tracestate` policies read the bytes in place, OTTL conditions
//! decode the trace, and only kept traces are decoded for output.
//! Bounded by `num_traces` and by `max_buffered_bytes` (OTLP-encoded span size). When full,
//! the **oldest traces are decided early on what has arrived** — so an error trace is still
//! kept — and each early decision is counted; with `block_on_overflow`, senders wait
//! instead. A trace over `maximum_trace_size_bytes` is decided at once. Resource and scope
//! are shared behind `Arc` by every span buffered from the same batch group.
//!
//! # Late spans and shutdown
//! Decided trace ids stay in fixed-size caches (sampled, not sampled): a late span follows
//! its trace's decision and is counted as late. On shutdown every buffered trace is decided
//! on what has arrived and the sampled ones are delivered before shutdown completes (or,
//! with `drop_pending_traces_on_shutdown`, dropped and counted).
//!
//! # Scaling
//! Traces are sharded by trace id over `shards` workers (default: one per core), each
//! owning its traces outright: no lock on the hot path. The caller's task (a receiver's)
//! encodes the spans for their shards (one encoding per span) and frees the decoded
//! ones where they were decoded; shards publish their counters once per batch.
//!
//! # Time
//! Deadlines, decision latency and rate limits follow the sampler's clock
//! ([`TailSampler::with_clock`]; tokio's by default), so tests and simulations move time
//! exactly with a [`ManualClock`](otel_pipeline_core::clock::ManualClock).

mod buffer;
pub mod config;
mod handoff;
mod journal;
mod pack;
mod policy;
pub(crate) mod wire;

use std::collections::{BinaryHeap, HashSet, VecDeque};

use ahash::{AHashMap as HashMap, AHashSet};
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::boxed::BoxExporter;
use otel_pipeline_core::clock::{SharedClock, TokioClock};
use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_pipeline_core::queue::{Redelivery, deadline_outcome, join_until, stage_deadlines};
use otel_pipeline_core::storage::{FileStorageConfig, RecordId, Store};
use otel_pipeline_core::telemetry::{Counter, Gauge, Histogram};
use otel_pipeline_core::{
    Batch, BoxConsumer, BoxError, BoxFuture, BuildError, Child, ComponentContext, ComponentId,
    ComponentTelemetry, ConsumeError, Consumer, DropReason, Exporter, Lifecycle, Processor, Traces,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{HandoffConfig, PolicyConfig, PolicyType, StatusCode, TailSamplingConfig};
use policy::Compiled;
pub use policy::Decision;

/// A span whose trace id is not 16 bytes, or all zeros.
const INVALID_TRACE_ID: DropReason = DropReason::new("invalid_trace_id");
/// A buffered span that no longer decodes (never expected; counted, not hidden).
const UNDECODABLE: DropReason = DropReason::new("undecodable");
/// A span arriving after its trace was decided and not kept.
const LATE_NOT_SAMPLED: DropReason = DropReason::new("late_not_sampled");
/// A trace still buffered at shutdown, with `drop_pending_traces_on_shutdown`.
const DROPPED_ON_SHUTDOWN: DropReason = DropReason::new("shutdown");
/// The spans of a trace the policies did not keep.
const NOT_SAMPLED: DropReason = DropReason::new("not_sampled");
pub(crate) use policy::combine;

use buffer::{Encoded, Held, ResourceHead, Scoped, ShardBatch, SpanMeta, TraceBuf, key_mask};
use handoff::{HandoffStats, Marker};

use crate::config::ConfigError;

/// A fixed-size set of trace ids that forgets the oldest first.
#[derive(Debug)]
struct DecisionCache {
    set: AHashSet<u128>,
    order: VecDeque<u128>,
    cap: usize,
}

impl DecisionCache {
    fn new(cap: usize) -> Self {
        Self {
            // Grows as decisions are made: a small deployment never pays for the full size.
            set: AHashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, id: u128) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }

    fn contains(&self, id: u128) -> bool {
        self.set.contains(&id)
    }
}

/// Why a trace was decided before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Early {
    OnTime,
    Capacity,
    TooLarge,
    Shutdown,
}

/// The tail sampler's own instruments (see `docs/telemetry.md`).
mod instruments {
    use otel_pipeline_core::telemetry::Instrument;

    pub(super) const TRACES_BUFFERED: Instrument = Instrument::gauge(
        "otelcol_processor_tail_sampling_traces_buffered",
        "{traces}",
        "Traces held awaiting a decision.",
    );
    pub(super) const SPANS_BUFFERED: Instrument = Instrument::gauge(
        "otelcol_processor_tail_sampling_spans_buffered",
        "{spans}",
        "Spans held awaiting their trace's decision.",
    );
    pub(super) const BYTES_BUFFERED: Instrument = Instrument::gauge(
        "otelcol_processor_tail_sampling_bytes_buffered",
        "By",
        "Encoded bytes of the spans held awaiting a decision.",
    );
    pub(super) const MEMORY_HELD: Instrument = Instrument::gauge(
        "otelcol_processor_tail_sampling_memory_held",
        "By",
        "Heap bytes the buffered spans take as held (packed, see pack_spans), with the span dictionaries.",
    );
    pub(super) const DECISIONS: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_decisions",
        "{traces}",
        "Trace decisions by policy (`(final)` for the combined one) and outcome.",
    );
    pub(super) const EARLY_DECISIONS: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_early_decisions",
        "{traces}",
        "Traces decided before their decision wait ended, by reason.",
    );
    pub(super) const LATE_SPANS: Instrument = Instrument::counter(
        "otelcol_processor_tail_sampling_late_spans",
        "{spans}",
        "Spans that arrived after their trace was decided, by the decision they followed.",
    );
    pub(super) const DECISION_LATENCY: Instrument = Instrument::histogram(
        "otelcol_processor_tail_sampling_decision_latency",
        "us",
        "How long after its decision deadline each trace was decided.",
        &[
            100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000,
        ],
    );
}

/// Counters and gauges shared by the shards.
struct Stats {
    traces: Gauge,
    spans: Gauge,
    bytes: Gauge,
    held: Gauge,
    /// Per top-level policy: [sampled, not sampled].
    per_policy: Vec<[Counter; 2]>,
    /// Final: [sampled, not sampled].
    final_decisions: [Counter; 2],
    names: Vec<String>,
    early_capacity: Counter,
    early_too_large: Counter,
    late_sampled: Counter,
    late_not_sampled: Counter,
    latency: Histogram,
    telemetry: Arc<ComponentTelemetry>,
}

impl Stats {
    fn new(telemetry: Arc<ComponentTelemetry>, names: &[String]) -> Self {
        use instruments::*;
        let t = &telemetry;
        let decision =
            |policy: &str, d: &str| t.counter(&DECISIONS, &[("policy", policy), ("decision", d)]);
        Self {
            traces: t.gauge(&TRACES_BUFFERED, &[]),
            spans: t.gauge(&SPANS_BUFFERED, &[]),
            bytes: t.gauge(&BYTES_BUFFERED, &[]),
            held: t.gauge(&MEMORY_HELD, &[]),
            per_policy: names
                .iter()
                .map(|n| [decision(n, "sampled"), decision(n, "not_sampled")])
                .collect(),
            final_decisions: [
                decision("(final)", "sampled"),
                decision("(final)", "not_sampled"),
            ],
            names: names.to_vec(),
            early_capacity: t.counter(&EARLY_DECISIONS, &[("reason", "capacity")]),
            early_too_large: t.counter(&EARLY_DECISIONS, &[("reason", "trace_too_large")]),
            late_sampled: t.counter(&LATE_SPANS, &[("decision", "sampled")]),
            late_not_sampled: t.counter(&LATE_SPANS, &[("decision", "not_sampled")]),
            latency: t.histogram(&DECISION_LATENCY, &[]),
            telemetry,
        }
    }
}

/// Counter changes a shard made since it last published them. Shards publish once per
/// call (`ingest`, `decide_due`, `decide_all`) instead of touching the shared counters
/// span by span, which would bounce their cache lines between the cores.
#[derive(Debug, Default)]
struct Tally {
    traces: i64,
    spans: i64,
    bytes: i64,
    held: i64,
    per_policy: Vec<[i64; 2]>,
    final_decisions: [i64; 2],
    early_capacity: i64,
    early_too_large: i64,
    late_sampled: i64,
    late_not_sampled: i64,
    /// Decision latencies in microseconds since the last publish.
    latencies: Vec<u64>,
    dropped: Vec<(DropReason, usize)>,
}

impl Tally {
    fn new(policies: usize) -> Self {
        Self {
            per_policy: vec![[0; 2]; policies],
            ..Self::default()
        }
    }

    fn dropped(&mut self, reason: DropReason, n: usize) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.dropped.push((reason, n)),
        }
    }

    /// Add the changes to the shared counters and start again from zero.
    fn publish(&mut self, stats: &Stats) {
        let gauge = |cell: &Gauge, v: &mut i64| {
            if *v != 0 {
                cell.add(std::mem::take(v));
            }
        };
        let add = |cell: &Counter, v: &mut i64| {
            if *v > 0 {
                cell.add(std::mem::take(v) as u64);
            }
        };
        gauge(&stats.traces, &mut self.traces);
        gauge(&stats.spans, &mut self.spans);
        gauge(&stats.bytes, &mut self.bytes);
        gauge(&stats.held, &mut self.held);
        for (cells, v) in stats.per_policy.iter().zip(&mut self.per_policy) {
            add(&cells[0], &mut v[0]);
            add(&cells[1], &mut v[1]);
        }
        add(&stats.final_decisions[0], &mut self.final_decisions[0]);
        add(&stats.final_decisions[1], &mut self.final_decisions[1]);
        add(&stats.early_capacity, &mut self.early_capacity);
        add(&stats.early_too_large, &mut self.early_too_large);
        add(&stats.late_sampled, &mut self.late_sampled);
        add(&stats.late_not_sampled, &mut self.late_not_sampled);
        for us in self.latencies.drain(..) {
            stats.latency.record(us);
        }
        for (reason, n) in self.dropped.drain(..) {
            stats.telemetry.add_dropped(reason, n);
        }
    }
}

/// Read-only view of the tail sampler's counters, for tests and status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TailSamplingStats {
    /// Traces buffered now.
    pub traces_buffered: i64,
    /// Spans buffered now.
    pub spans_buffered: i64,
    /// OTLP-encoded bytes buffered now.
    pub bytes_buffered: i64,
    /// Heap bytes the buffered spans take now as held (packed), with the span
    /// dictionaries.
    pub memory_held: i64,
    /// Traces kept.
    pub sampled: i64,
    /// Traces dropped.
    pub not_sampled: i64,
    /// Traces decided early because the buffer was full.
    pub early_capacity: i64,
    /// Traces decided early because they grew past `maximum_trace_size_bytes`.
    pub early_too_large: i64,
    /// Late spans that followed a sampled decision.
    pub late_sampled: i64,
    /// Late spans dropped after a not-sampled decision.
    pub late_not_sampled: i64,
    /// Undecided traces handed to their new owners at shutdown.
    pub handoff_sent_traces: i64,
    /// Spans of those traces.
    pub handoff_sent_spans: i64,
    /// OTLP-encoded bytes of the hand-off requests sent (spans and decisions).
    pub handoff_sent_bytes: i64,
    /// Decisions handed over at shutdown.
    pub handoff_sent_decisions: i64,
    /// Traces a draining sampler could not hand off and decided itself.
    pub handoff_failed_traces: i64,
    /// Traces taken from draining peers.
    pub handoff_received_traces: i64,
    /// Spans taken from draining peers.
    pub handoff_received_spans: i64,
    /// Decisions taken from draining peers.
    pub handoff_received_decisions: i64,
}

/// Policies published for every shard to pick up before its next decision.
#[derive(Default)]
struct LivePolicies {
    generation: std::sync::atomic::AtomicU64,
    latest: Mutex<Option<Arc<PolicySet>>>,
}

/// One published set of policies.
struct PolicySet {
    config: Arc<TailSamplingConfig>,
    policies: Vec<Compiled>,
    stats: Arc<Stats>,
}

/// What a handle reaches of a built sampler.
struct Live {
    stats: Arc<Stats>,
    handoff: Arc<HandoffStats>,
    policies: Arc<LivePolicies>,
    config: Arc<TailSamplingConfig>,
    keys: Arc<[String]>,
    clock: SharedClock,
}

/// A handle to a running tail sampler: read its counters, change its policies.
#[derive(Clone)]
pub struct TailSamplingHandle(Arc<Mutex<Option<Live>>>);

impl std::fmt::Debug for TailSamplingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TailSamplingHandle")
            .field(&self.stats())
            .finish()
    }
}

impl TailSamplingHandle {
    /// The counters now (all zero before the pipeline is built).
    pub fn stats(&self) -> TailSamplingStats {
        let Some((s, h)) = self
            .0
            .lock()
            .as_ref()
            .map(|l| (Arc::clone(&l.stats), Arc::clone(&l.handoff)))
        else {
            return TailSamplingStats::default();
        };
        let v = |a: &Counter| a.get() as i64;
        TailSamplingStats {
            traces_buffered: s.traces.get(),
            spans_buffered: s.spans.get(),
            bytes_buffered: s.bytes.get(),
            memory_held: s.held.get(),
            sampled: v(&s.final_decisions[0]),
            not_sampled: v(&s.final_decisions[1]),
            early_capacity: v(&s.early_capacity),
            early_too_large: v(&s.early_too_large),
            late_sampled: v(&s.late_sampled),
            late_not_sampled: v(&s.late_not_sampled),
            handoff_sent_traces: v(&h.sent_traces),
            handoff_sent_spans: v(&h.sent_spans),
            handoff_sent_bytes: v(&h.sent_bytes),
            handoff_sent_decisions: v(&h.sent_decisions),
            handoff_failed_traces: v(&h.failed_traces),
            handoff_received_traces: v(&h.received_traces),
            handoff_received_spans: v(&h.received_spans),
            handoff_received_decisions: v(&h.received_decisions),
        }
    }

    /// (sampled, not sampled) counts of the top-level policy named `name`.
    pub fn policy(&self, name: &str) -> Option<(i64, i64)> {
        let s = self.0.lock().as_ref().map(|l| Arc::clone(&l.stats))?;
        let i = s.names.iter().position(|n| n == name)?;
        Some((
            s.per_policy[i][0].get() as i64,
            s.per_policy[i][1].get() as i64,
        ))
    }

    /// Replace the running sampler's policies (and `sample_on_first_match`) with those of
    /// `config`. Every trace decided from now on is decided by them; the traces buffered
    /// stay buffered, nothing restarts, and the other settings (`decision_wait`, the
    /// buffer's bounds, ...) keep the values the sampler was built with. A configuration
    /// that does not compile is refused with the same error as at start-up, and the
    /// policies running keep running.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use otel_pipeline_core::{DirectReceiver, Pipeline, testing::InMemoryExporter};
    /// use otel_processors::config::from_yaml;
    /// use otel_processors::tail_sampling::{TailSampler, TailSamplingConfig};
    /// let config = |pct: u32| -> TailSamplingConfig {
    ///     from_yaml("tail_sampling", &format!(
    ///         "policies: [{{ name: rest, type: probabilistic, probabilistic: {{ sampling_percentage: {pct} }} }}]"
    ///     )).unwrap()
    /// };
    /// let sampler = TailSampler::new(config(5));
    /// let handle = sampler.handle();
    /// let (receiver, _sender) = DirectReceiver::new();
    /// let running = Pipeline::traces().receiver(receiver).processor(sampler)
    ///     .exporter(InMemoryExporter::new().0).build().unwrap().start().await.unwrap();
    /// handle.update_policies(&config(50)).unwrap();
    /// assert!(handle.update_policies(&config(500)).is_err()); // 5 % keeps running
    /// running.shutdown(std::time::Duration::from_secs(1)).await.unwrap();
    /// # }
    /// ```
    pub fn update_policies(&self, config: &TailSamplingConfig) -> Result<(), ConfigError> {
        let mut guard = self.0.lock();
        let Some(live) = guard.as_mut() else {
            return Err(ConfigError::new(
                "policies",
                "the tail sampler is not built yet: nothing to update",
            ));
        };
        let mut policies = TailSampler::compile(config, live.clock.now())?;
        for p in &mut policies {
            p.index_known_keys(&live.keys);
        }
        let names: Vec<String> = config.policies.iter().map(|p| p.name.clone()).collect();
        let stats = Arc::new(Stats::new(Arc::clone(&live.stats.telemetry), &names));
        let mut merged = (*live.config).clone();
        merged.policies = config.policies.clone();
        merged.sample_on_first_match = config.sample_on_first_match;
        let merged = Arc::new(merged);
        *live.policies.latest.lock() = Some(Arc::new(PolicySet {
            config: Arc::clone(&merged),
            policies,
            stats: Arc::clone(&stats),
        }));
        live.policies
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        live.stats = stats;
        live.config = merged;
        Ok(())
    }
}

/// The engine of one shard: buffer, decide, emit. Synchronous, so it can be driven and
/// measured without a runtime; the processor runs one per shard in its own task.
pub(crate) struct TailSamplingCore {
    config: Arc<TailSamplingConfig>,
    /// The resources and scopes the buffered traces hold, each counted once in `bytes`
    /// while any trace holds it: pointer -> traces holding it.
    held_groups: HashMap<usize, u32>,
    held_heads: HashMap<usize, u32>,
    policies: Vec<Compiled>,
    traces: HashMap<u128, TraceBuf>,
    due: BinaryHeap<std::cmp::Reverse<(Instant, u128)>>,
    arrival: VecDeque<(u128, Instant)>,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
    max_traces: usize,
    max_bytes: usize,
    bytes: usize,
    spans: usize,
    out: Vec<(Arc<Scoped>, Vec<Span>)>,
    stats: Arc<Stats>,
    tally: Tally,
    /// Keys the attribute policies look at, noted per trace at ingest.
    keys: Arc<[String]>,
    /// Which published set of policies this shard runs (0: those it was built with).
    generation: u64,
    /// What the shard's buffered spans are packed with.
    dicts: pack::Dicts,
    /// Room to pack a span in.
    scratch: Vec<u8>,
    /// What the dictionaries held when last counted.
    dicts_held: usize,
    /// The journal's bookkeeping (with `storage`).
    journal: JournalNotes,
}

/// (journal record, trace) pairs a shard resolved.
type Resolved = Vec<(RecordId, u128)>;

/// What a shard tells its journal after each delivery.
#[derive(Debug, Default)]
struct JournalNotes {
    on: bool,
    /// The record of the batch being ingested.
    current: Option<RecordId>,
    /// (record, trace) pairs resolved: decided, handed off, or taken as late.
    resolved: Vec<(RecordId, u128)>,
    /// Decisions made.
    decisions: Vec<(u128, bool)>,
    /// While replaying: traces decided before the crash, whose spans are skipped.
    skip: AHashSet<u128>,
    /// Spans skipped that way.
    skipped: u64,
}

impl JournalNotes {
    fn resolve(&mut self, id: u128) {
        if let Some(r) = self.current {
            self.resolved.push((r, id));
        }
    }
}

impl std::fmt::Debug for TailSamplingCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailSamplingCore")
            .field("traces", &self.traces.len())
            .field("spans", &self.spans)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn trace_key(id: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(id).ok().map(u128::from_be_bytes)
}

/// The `probabilistic` policy's threshold for `percentage`, for tests elsewhere in the
/// crate that hold other samplers consistent with it.
#[cfg(test)]
pub(crate) fn policy_threshold_for_tests(percentage: f64) -> (u64, String) {
    policy::threshold(percentage)
}

/// Set `th` in the `ot` member of a `tracestate`, keeping the rest; a threshold already
/// there that is higher (an earlier sampler kept less) stays.
fn with_threshold(trace_state: &str, th: &str) -> String {
    crate::sampling::with_ot(trace_state, crate::sampling::parse_th(th), None)
}

impl TailSamplingCore {
    fn new(
        config: Arc<TailSamplingConfig>,
        mut policies: Vec<Compiled>,
        shards: usize,
        stats: Arc<Stats>,
    ) -> Self {
        let mut keys = Vec::new();
        for p in &mut policies {
            p.index_keys(&mut keys);
        }
        let share = |n: usize| {
            if n == 0 {
                usize::MAX
            } else {
                n.div_ceil(shards).max(1)
            }
        };
        let capacity = if config.expected_new_traces_per_sec > 0 {
            (config.expected_new_traces_per_sec * config.decision_wait.as_secs().max(1) as usize
                / shards)
                .min(share(config.num_traces))
        } else {
            0
        };
        Self {
            held_groups: HashMap::default(),
            held_heads: HashMap::default(),
            sampled: DecisionCache::new(config.decision_cache.sampled_cache_size.div_ceil(shards)),
            not_sampled: DecisionCache::new(
                config
                    .decision_cache
                    .non_sampled_cache_size
                    .div_ceil(shards),
            ),
            max_traces: share(config.num_traces),
            max_bytes: share(config.max_buffered_bytes),
            traces: HashMap::with_capacity(capacity),
            due: BinaryHeap::new(),
            arrival: VecDeque::new(),
            bytes: 0,
            spans: 0,
            out: Vec::new(),
            policies,
            config,
            tally: Tally::new(stats.per_policy.len()),
            stats,
            keys: keys.into(),
            generation: 0,
            dicts: pack::Dicts::default(),
            scratch: Vec::new(),
            dicts_held: 0,
            journal: JournalNotes::default(),
        }
    }

    fn full(&self) -> bool {
        self.traces.len() >= self.max_traces || self.bytes >= self.max_bytes
    }

    /// Whether a new trace would have to wait (block-on-overflow mode).
    pub(crate) fn must_wait(&self) -> bool {
        self.config.block_on_overflow && self.full()
    }

    /// When the next trace is due, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|r| r.0.0)
    }

    /// Encode a batch for the shards, on the caller's thread: spans split by trace id over
    /// `shards` (at least one), each with what the shard's policies need to know of it.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn prepare(&self, batch: Batch<Traces>, shards: usize) -> Vec<ShardBatch> {
        prepare(batch, shards, &self.keys)
    }

    /// Buffer a prepared batch.
    pub(crate) fn ingest(&mut self, batch: &ShardBatch, now: Instant) {
        let cap = match self.config.maximum_trace_size_bytes {
            0 => usize::MAX,
            n => n,
        };
        for &(id, keep) in &batch.decisions {
            self.take_decision(id, keep);
        }
        self.journal.current = batch.record;
        let mut from = 0;
        for (scoped, group_mask, to) in &batch.groups {
            // SDKs export a request's spans together, so spans of one trace come in runs:
            // each run's room is reserved at its first span.
            let mut i = from;
            while i < *to {
                let id = batch.spans[i].id;
                let mut end = i + 1;
                let mut run = wire::delimited_len(batch.body(i));
                while end < *to && batch.spans[end].id == id {
                    run += wire::delimited_len(batch.body(end));
                    end += 1;
                }
                for k in i..end {
                    let encoded = Encoded {
                        body: batch.body(k),
                        run: if k == i && end - i > 1 {
                            run.min(cap)
                        } else {
                            0
                        },
                    };
                    self.ingest_one(scoped, *group_mask, &batch.spans[k], encoded, now);
                }
                i = end;
            }
            from = *to;
        }
        self.compact();
        self.tally.publish(&self.stats);
    }

    fn ingest_one(
        &mut self,
        scoped: &Arc<Scoped>,
        group_mask: u64,
        meta: &SpanMeta,
        encoded: Encoded<'_>,
        now: Instant,
    ) {
        let Some(id) = meta.id else {
            self.tally.dropped(INVALID_TRACE_ID, 1);
            return;
        };
        if self.journal.on && self.journal.skip.contains(&id) {
            // Replay: decided (and delivered) before the crash.
            self.journal.skipped += 1;
            self.journal.resolve(id);
            return;
        }
        let is_root = meta.root;
        if let Some(t) = self.traces.get_mut(&id) {
            if let Some(r) = self.journal.current
                && !t.records.contains(&r)
            {
                t.records.push(r);
            }
            let dict = self.dicts.packing(t.dict, self.config.pack_spans);
            let (held, groups) = (t.held, t.groups.len());
            let mut bytes = t.push(scoped, group_mask, meta, encoded, dict, &mut self.scratch);
            self.tally.held += (t.held - held) as i64;
            if t.groups.len() > groups {
                bytes += hold_group(&mut self.held_groups, &mut self.held_heads, scoped);
            }
            self.bytes += bytes;
            self.spans += 1;
            self.tally.spans += 1;
            self.tally.bytes += bytes as i64;
            if is_root && !t.root_seen {
                t.root_seen = true;
                if let Some(after) = self.config.decision_wait_after_root_received {
                    let due = (now + after).min(t.due);
                    if due < t.due {
                        t.due = due;
                        self.due.push(std::cmp::Reverse((due, id)));
                    }
                }
            }
            let too_large = self.config.maximum_trace_size_bytes > 0
                && t.bytes > self.config.maximum_trace_size_bytes;
            if too_large {
                self.decide(id, Early::TooLarge, now);
            }
            return;
        }
        if self.journal.on && (self.sampled.contains(id) || self.not_sampled.contains(id)) {
            self.journal.resolve(id);
        }
        if self.sampled.contains(id) {
            self.tally.late_sampled += 1;
            match wire::decode_span(encoded.body) {
                Some(span) => self.out.push((Arc::clone(scoped), vec![span])),
                None => self.tally.dropped(UNDECODABLE, 1),
            }
            return;
        }
        if self.not_sampled.contains(id) {
            self.tally.late_not_sampled += 1;
            self.tally.dropped(LATE_NOT_SAMPLED, 1);
            return;
        }
        // A new trace: make room by deciding the oldest early, on what has arrived.
        while self.full() && !self.config.block_on_overflow {
            let Some((old, _)) = self.arrival.pop_front() else {
                break;
            };
            if self.traces.contains_key(&old) {
                self.decide(old, Early::Capacity, now);
            }
        }
        let mut due = now + self.config.decision_wait;
        if let Some(after) = self
            .config
            .decision_wait_after_root_received
            .filter(|_| is_root)
        {
            due = due.min(now + after);
        }
        let dict = self.dicts.enter();
        let mut t = TraceBuf::new(
            id.to_be_bytes(),
            wire::span_trace_state(encoded.body).to_owned(),
            now,
            due,
            is_root,
            dict,
        );
        let span_bytes = t.push(
            scoped,
            group_mask,
            meta,
            encoded,
            self.dicts.packing(dict, self.config.pack_spans),
            &mut self.scratch,
        );
        t.records.extend(self.journal.current);
        let bytes = span_bytes + hold_group(&mut self.held_groups, &mut self.held_heads, scoped);
        self.tally.held += t.held as i64;
        self.traces.insert(id, t);
        self.due.push(std::cmp::Reverse((due, id)));
        self.arrival.push_back((id, now));
        self.bytes += bytes;
        self.spans += 1;
        self.tally.traces += 1;
        self.tally.spans += 1;
        self.tally.bytes += bytes as i64;
        if self.config.maximum_trace_size_bytes > 0
            && span_bytes > self.config.maximum_trace_size_bytes
        {
            self.decide(id, Early::TooLarge, now);
        }
    }

    /// Decide every trace due at `now`.
    pub(crate) fn decide_due(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((due, id))) = self.due.peek().copied() {
            if due > now {
                break;
            }
            self.due.pop();
            // Skip stale entries (trace gone, or its due time moved earlier).
            if self.traces.get(&id).is_some_and(|t| t.due == due) {
                self.decide(id, Early::OnTime, now);
            }
        }
        self.compact();
        self.tally.publish(&self.stats);
    }

    /// Drop the deadline-heap and arrival entries of traces already gone (decided early,
    /// evicted), once they outnumber the live traces: both stay within
    /// `2 * traces + 1024` entries, whatever the arrival rate.
    fn compact(&mut self) {
        self.collect_dicts();
        let limit = 2 * self.traces.len() + 1024;
        if self.arrival.len() > limit {
            let traces = &self.traces;
            self.arrival
                .retain(|(id, seen)| traces.get(id).is_some_and(|t| t.first_seen == *seen));
        }
        if self.due.len() > limit {
            self.due = self
                .traces
                .iter()
                .map(|(id, t)| std::cmp::Reverse((t.due, *id)))
                .collect();
        }
    }

    /// Drop the dictionaries no trace uses, and count what the rest hold.
    fn collect_dicts(&mut self) {
        self.dicts.collect();
        let held = self.dicts.held_bytes();
        self.tally.held += held as i64 - self.dicts_held as i64;
        self.dicts_held = held;
    }

    /// Deadline-heap entries held (live and stale), for the memory bound's tests.
    #[cfg(test)]
    pub(crate) fn heap_entries(&self) -> usize {
        self.due.len() + self.arrival.len()
    }

    /// Decide everything buffered (shutdown); with `drop`, drop it instead, counted with
    /// `reason` (`shutdown` when configured so, `shutdown_deadline` when time ran out).
    pub(crate) fn decide_all(&mut self, now: Instant, drop: Option<DropReason>) {
        let ids: Vec<u128> = self.traces.keys().copied().collect();
        for id in ids {
            if let Some(reason) = drop {
                if let Some(t) = self.remove(id) {
                    self.tally.dropped(reason, t.spans);
                }
            } else {
                self.decide(id, Early::Shutdown, now);
            }
        }
        self.due.clear();
        self.arrival.clear();
        self.collect_dicts();
        self.tally.publish(&self.stats);
    }

    fn remove(&mut self, id: u128) -> Option<TraceBuf> {
        let t = self.traces.remove(&id)?;
        if self.journal.on {
            self.journal
                .resolved
                .extend(t.records.iter().map(|r| (*r, id)));
        }
        // Its dictionary stays readable until the next `compact`.
        self.dicts.leave(t.dict);
        self.tally.held -= t.held as i64;
        let mut released = 0;
        for (scoped, _) in &t.groups {
            released += release_group(&mut self.held_groups, &mut self.held_heads, scoped);
        }
        self.bytes -= released;
        self.tally.bytes -= released as i64;
        self.bytes -= t.bytes;
        self.spans -= t.spans;
        self.tally.traces -= 1;
        self.tally.spans -= t.spans as i64;
        self.tally.bytes -= t.bytes as i64;
        Some(t)
    }

    /// Take up the latest published policies, if they are newer than this shard's.
    fn refresh(&mut self, live: &LivePolicies) {
        let generation = live.generation.load(std::sync::atomic::Ordering::Acquire);
        if generation == self.generation {
            return;
        }
        let Some(set) = live.latest.lock().clone() else {
            return;
        };
        // What was counted under the old policies goes to their counters.
        self.tally.publish(&self.stats);
        self.policies = set.policies.clone();
        self.stats = Arc::clone(&set.stats);
        self.config = Arc::clone(&set.config);
        self.tally = Tally::new(self.policies.len());
        self.generation = generation;
    }

    fn decide(&mut self, id: u128, why: Early, now: Instant) {
        let Some(t) = self.remove(id) else { return };
        match why {
            Early::Capacity => self.tally.early_capacity += 1,
            Early::TooLarge => self.tally.early_too_large += 1,
            Early::OnTime => {
                let late = now.saturating_duration_since(t.due).as_micros();
                self.tally.latencies.push(late.min(u64::MAX as u128) as u64);
            }
            Early::Shutdown => {}
        }
        let mut decisions = Vec::with_capacity(self.policies.len());
        let mut non_probabilistic_sampled = false;
        let mut th: Option<String> = None;
        for (i, p) in self.policies.iter_mut().enumerate() {
            let held = Held {
                trace: &t,
                dict: self.dicts.get(t.dict),
            };
            let d = p.evaluate(&held, now);
            let sampled = d.samples();
            self.tally.per_policy[i][usize::from(!sampled)] += 1;
            if sampled {
                match p.th() {
                    Some(x) => th = th.or_else(|| Some(x.to_string())),
                    None => non_probabilistic_sampled = true,
                }
            }
            decisions.push(d);
            if sampled && self.config.sample_on_first_match {
                break;
            }
        }
        let keep = combine(decisions.iter().copied());
        if self.journal.on {
            self.journal.decisions.push((id, keep));
        }
        self.tally.final_decisions[usize::from(!keep)] += 1;
        if keep {
            self.sampled.insert(id);
            // Kept only by probability: record the threshold for adjusted counts.
            self.emit(&t, th.filter(|_| !non_probabilistic_sampled).as_deref());
        } else {
            self.not_sampled.insert(id);
            self.tally.dropped(NOT_SAMPLED, t.spans);
        }
    }

    /// Decode a kept trace for output, with `th` set in each span's `tracestate`.
    fn emit(&mut self, t: &TraceBuf, th: Option<&str>) {
        let mut groups = Held {
            trace: t,
            dict: self.dicts.get(t.dict),
        }
        .decode();
        let decoded: usize = groups.iter().map(|(_, spans)| spans.len()).sum();
        self.tally
            .dropped(UNDECODABLE, t.spans - decoded.min(t.spans));
        if let Some(th) = th {
            for (_, spans) in &mut groups {
                for s in spans.iter_mut() {
                    s.trace_state = with_threshold(&s.trace_state, th);
                }
            }
        }
        self.out.append(&mut groups);
    }

    /// A decision a draining peer made: a trace buffered here is decided that way at
    /// once (its spans are late ones that came here while the peer drained); otherwise
    /// the id is remembered, so late spans follow it.
    fn take_decision(&mut self, id: u128, keep: bool) {
        match self.remove(id) {
            Some(t) if keep => {
                self.sampled.insert(id);
                self.tally.late_sampled += t.spans as i64;
                self.emit(&t, None);
            }
            Some(t) => {
                self.not_sampled.insert(id);
                self.tally.late_not_sampled += t.spans as i64;
                self.tally.dropped(LATE_NOT_SAMPLED, t.spans);
            }
            None if keep => self.sampled.insert(id),
            None => self.not_sampled.insert(id),
        }
    }

    /// Up to about `max_spans` spans of buffered traces (at least one trace), decoded into
    /// one request marked for the hand-off, with the traces' ids and how many spans it
    /// holds. The traces stay buffered until [`Self::forget`]: if the hand-off fails they
    /// are decided here.
    pub(crate) fn handoff_chunk(
        &mut self,
        max_spans: usize,
    ) -> Option<(Vec<u128>, ExportTraceServiceRequest, usize)> {
        let mut ids = Vec::new();
        let mut groups = Vec::new();
        let mut spans = 0;
        for (id, t) in &self.traces {
            if !ids.is_empty() && spans + t.spans > max_spans {
                break;
            }
            ids.push(*id);
            let held = Held {
                trace: t,
                dict: self.dicts.get(t.dict),
            };
            for (scoped, decoded) in held.decode() {
                spans += decoded.len();
                groups.push((scoped, decoded));
            }
        }
        if ids.is_empty() {
            return None;
        }
        let mut req = assemble(groups);
        handoff::mark_spans(&mut req);
        Some((ids, req, spans))
    }

    /// Let go of traces handed off (`spans`: how many of their spans decoded and left).
    pub(crate) fn forget(&mut self, ids: &[u128], spans: usize) {
        let mut held = 0;
        for id in ids {
            if let Some(t) = self.remove(*id) {
                held += t.spans;
            }
        }
        self.tally.dropped(UNDECODABLE, held.saturating_sub(spans));
        self.tally.publish(&self.stats);
    }

    /// The ids in the decision caches, newest first: (sampled, not sampled).
    pub(crate) fn decided(&self) -> (Vec<u128>, Vec<u128>) {
        (
            self.sampled.order.iter().rev().copied().collect(),
            self.not_sampled.order.iter().rev().copied().collect(),
        )
    }

    /// Traces buffered now.
    pub(crate) fn buffered_traces(&self) -> usize {
        self.traces.len()
    }

    /// What the journal needs since the last call: decisions made, (record, trace)
    /// pairs resolved.
    fn take_journal(&mut self) -> (Vec<(u128, bool)>, Resolved) {
        (
            std::mem::take(&mut self.journal.decisions),
            std::mem::take(&mut self.journal.resolved),
        )
    }

    /// Take the spans decided for keeping since the last call, as one batch.
    pub(crate) fn take_output(&mut self) -> Option<ExportTraceServiceRequest> {
        if self.out.is_empty() {
            return None;
        }
        Some(assemble(std::mem::take(&mut self.out)))
    }
}

/// One request from groups of decoded spans.
/// A trace now holds `scoped`: the bytes to count for it, its scope and its resource
/// each the first time any buffered trace of the shard holds them.
fn hold_group(
    groups: &mut HashMap<usize, u32>,
    heads: &mut HashMap<usize, u32>,
    scoped: &Arc<Scoped>,
) -> usize {
    let mut bytes = 0;
    let g = groups.entry(Arc::as_ptr(scoped) as usize).or_insert(0);
    if *g == 0 {
        bytes += scoped.size;
    }
    *g += 1;
    let h = heads.entry(Arc::as_ptr(&scoped.head) as usize).or_insert(0);
    if *h == 0 {
        bytes += scoped.head.size;
    }
    *h += 1;
    bytes
}

/// A trace no longer holds `scoped`: the bytes no longer held once no trace holds them.
/// (The pointers stay valid while counted: the leaving trace still holds its `Arc`s.)
fn release_group(
    groups: &mut HashMap<usize, u32>,
    heads: &mut HashMap<usize, u32>,
    scoped: &Arc<Scoped>,
) -> usize {
    let mut bytes = 0;
    let key = Arc::as_ptr(scoped) as usize;
    if let Some(g) = groups.get_mut(&key) {
        *g -= 1;
        if *g == 0 {
            groups.remove(&key);
            bytes += scoped.size;
        }
    }
    let key = Arc::as_ptr(&scoped.head) as usize;
    if let Some(h) = heads.get_mut(&key) {
        *h -= 1;
        if *h == 0 {
            heads.remove(&key);
            bytes += scoped.head.size;
        }
    }
    bytes
}

/// What identifies a resource or scope with its schema URL, unambiguously: whether the
/// message is there, its encoding's length, the encoding, then the URL. (The encoding
/// followed straight by the URL would let one client's resource end where another's
/// URL begins, and merge them.)
fn group_key<M: prost::Message>(message: Option<&M>, schema_url: &str) -> Vec<u8> {
    let encoded = message.map(prost::Message::encode_to_vec);
    let mut key = Vec::with_capacity(9 + encoded.as_ref().map_or(0, Vec::len) + schema_url.len());
    key.push(u8::from(encoded.is_some()));
    let body = encoded.unwrap_or_default();
    key.extend_from_slice(&(body.len() as u64).to_le_bytes());
    key.extend_from_slice(&body);
    key.extend_from_slice(schema_url.as_bytes());
    key
}

fn assemble(out: Vec<(Arc<Scoped>, Vec<Span>)>) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::default();
    // Spans of equal resources go under one `ResourceSpans`, and of equal scopes under
    // one `ScopeSpans`, however many requests they came in: a service's kept traces
    // leave as one resource, not one copy per incoming request. Groups are compared by
    // their encoding, worked out once per incoming group (`Scoped`); the map holds the
    // `Arc`s, so no address is freed and reused while it lives.
    let mut by_group: HashMap<*const Scoped, (Arc<Scoped>, usize, usize)> = HashMap::new();
    let mut by_resource: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut by_scope: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
    for (scoped, spans) in out {
        let (r, s) = match by_group.get(&Arc::as_ptr(&scoped)) {
            Some(&(_, r, s)) => (r, s),
            None => {
                let resource_key = group_key(scoped.resource(), scoped.resource_schema_url());
                let r = *by_resource.entry(resource_key).or_insert_with(|| {
                    req.resource_spans.push(ResourceSpans {
                        resource: scoped.resource().cloned(),
                        schema_url: scoped.resource_schema_url().to_string(),
                        scope_spans: Vec::new(),
                    });
                    req.resource_spans.len() - 1
                });
                let scope_key = group_key(scoped.scope.as_ref(), &scoped.scope_schema_url);
                let scope_spans = &mut req.resource_spans[r].scope_spans;
                let s = *by_scope.entry((r, scope_key)).or_insert_with(|| {
                    scope_spans.push(ScopeSpans {
                        scope: scoped.scope.clone(),
                        schema_url: scoped.scope_schema_url.clone(),
                        spans: Vec::new(),
                    });
                    scope_spans.len() - 1
                });
                by_group.insert(Arc::as_ptr(&scoped), (scoped, r, s));
                (r, s)
            }
        };
        req.resource_spans[r].scope_spans[s].spans.extend(spans);
    }
    req
}

/// The tail sampling processor.
pub struct TailSampler {
    id: ComponentId,
    config: TailSamplingConfig,
    handle: TailSamplingHandle,
    clock: SharedClock,
    handoff: Option<BoxExporter<Traces>>,
    storage: Option<(FileStorageConfig, String)>,
}

impl std::fmt::Debug for TailSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailSampler")
            .field("id", &self.id)
            .field("config", &self.config)
            .field(
                "handoff",
                &self.handoff.as_ref().map(|e| e.id().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl TailSampler {
    /// A sampler with id `tail_sampling`.
    pub fn new(config: TailSamplingConfig) -> Self {
        Self {
            id: ComponentId::new("tail_sampling"),
            config,
            handle: TailSamplingHandle(Arc::new(Mutex::new(None))),
            clock: TokioClock::shared(),
            handoff: None,
            storage: None,
        }
    }

    /// Journal what the sampler holds in `storage` (a `file_storage` extension's
    /// settings), under the subdirectory `owner` (stable across restarts; the collector
    /// uses `processor_tail_sampling_<name>`): each accepted request is on disk (synced
    /// as its `fsync` says) before `consume` answers, and decisions are appended as they
    /// are delivered. After a crash, the restart decides what was buffered: traces past
    /// `decision_wait` at once, on all their spans, and late spans of traces decided
    /// before the crash follow those decisions (docs/reliability.md).
    ///
    /// ```
    /// use otel_pipeline_core::storage::FileStorageConfig;
    /// use otel_processors::tail_sampling::{TailSampler, TailSamplingConfig};
    ///
    /// let storage = FileStorageConfig {
    ///     directory: "/var/lib/otelcol/file_storage".into(),
    ///     ..FileStorageConfig::default()
    /// };
    /// let sampler = TailSampler::new(TailSamplingConfig::default())
    ///     .with_storage(storage, "processor_tail_sampling");
    /// # drop(sampler);
    /// ```
    pub fn with_storage(mut self, storage: FileStorageConfig, owner: impl Into<String>) -> Self {
        self.storage = Some((storage, owner.into()));
        self
    }

    /// Hand the buffered traces to their new owners through `exporter` at shutdown,
    /// instead of deciding them on what has arrived: a gateway leaving its set (a rolling
    /// restart, a scale-down) passes on what it holds.
    ///
    /// `exporter` is normally a trace router over the other gateways, with the agents'
    /// resolver and this gateway in its `exclude_endpoints`: the owner it picks for a
    /// trace is the one the agents pick once this gateway has left their set. The
    /// sampler owns it: it starts with the sampler and is drained at its shutdown.
    ///
    /// At shutdown each shard sends its undecided traces (their spans, marked so the new
    /// owner merges them with what it has of the trace and decides once, on all of it),
    /// then the ids in its decision caches (so late spans follow those decisions), for up
    /// to half of the shutdown's time. What it cannot send (no peer, refused, out of
    /// time) is decided here, as without a hand-off, and counted in
    /// `otelcol_processor_tail_sampling_handoff_failed_traces`.
    ///
    /// ```
    /// use otel_pipeline_core::testing::InMemoryExporter;
    /// use otel_processors::tail_sampling::{TailSampler, TailSamplingConfig};
    ///
    /// let (peers, _handed) = InMemoryExporter::new(); // a trace router in production
    /// let sampler = TailSampler::new(TailSamplingConfig::default()).with_handoff(peers);
    /// # drop(sampler);
    /// ```
    pub fn with_handoff<E: Exporter<Traces>>(mut self, exporter: E) -> Self {
        self.handoff = Some(Box::new(exporter));
        self
    }

    /// Take time from `clock` instead of tokio's: decision deadlines, decision latency
    /// and rate limits all follow it. With a [`ManualClock`](otel_pipeline_core::clock::ManualClock),
    /// a test moves time exactly and the shards decide as it passes their deadlines.
    ///
    /// ```
    /// use otel_pipeline_core::clock::ManualClock;
    /// use otel_processors::tail_sampling::{TailSampler, TailSamplingConfig};
    ///
    /// let clock = ManualClock::new();
    /// let sampler = TailSampler::new(TailSamplingConfig::default()).with_clock(clock.shared());
    /// // ... build and start a pipeline with it, send spans, then:
    /// clock.advance(std::time::Duration::from_secs(30)); // every buffered trace is due
    /// ```
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// A handle to its counters.
    pub fn handle(&self) -> TailSamplingHandle {
        self.handle.clone()
    }

    /// Check a configuration; errors name the setting (`policies[2].latency.threshold_ms`).
    pub fn validate(config: &TailSamplingConfig) -> Result<(), ConfigError> {
        Self::compile(config, Instant::now()).map(|_| ())
    }

    pub(crate) fn compile(
        config: &TailSamplingConfig,
        start: Instant,
    ) -> Result<Vec<Compiled>, ConfigError> {
        if config.decision_wait.is_zero() {
            return Err(ConfigError::new("decision_wait", "must be positive"));
        }
        if config.num_traces == 0 {
            return Err(ConfigError::new("num_traces", "must be at least 1"));
        }
        if config.policies.is_empty() {
            return Err(ConfigError::new("policies", "give at least one policy"));
        }
        let mut seen = HashSet::new();
        config
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.name.is_empty() {
                    return Err(ConfigError::new(
                        format!("policies[{i}].name"),
                        "every policy needs a name",
                    ));
                }
                if !seen.insert(p.name.as_str()) {
                    return Err(ConfigError::new(
                        format!("policies[{i}].name"),
                        format!("`{}` is used twice", p.name),
                    ));
                }
                Compiled::new(p, &format!("policies[{i}]"), start)
            })
            .collect()
    }

    /// A core for one shard, driven by hand (tests and the `internals` feature's benches).
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn core(
        config: TailSamplingConfig,
        telemetry: Arc<ComponentTelemetry>,
    ) -> Result<TailSamplingCore, ConfigError> {
        let policies = Self::compile(&config, Instant::now())?;
        let names: Vec<String> = config.policies.iter().map(|p| p.name.clone()).collect();
        let stats = Arc::new(Stats::new(telemetry, &names));
        Ok(TailSamplingCore::new(Arc::new(config), policies, 1, stats))
    }
}

/// Split a batch over `shards` by trace id and encode each span for its shard, sharing
/// each group's resource and scope; the decoded spans are freed here, on the caller's
/// thread.
#[cfg(any(test, feature = "internals"))]
fn prepare(batch: Batch<Traces>, shards: usize, keys: &[String]) -> Vec<ShardBatch> {
    prepare_counting(batch, shards, keys, true).0
}

/// What a batch brought from draining peers.
#[derive(Debug, Default)]
struct Received {
    traces: AHashSet<u128>,
    spans: usize,
    decisions: usize,
    /// Spans under a marker from a client the sampler does not obey.
    untrusted: usize,
}

/// [`prepare`], also counting what came from draining peers.
fn prepare_counting(
    batch: Batch<Traces>,
    shards: usize,
    keys: &[String],
    trusted: bool,
) -> (Vec<ShardBatch>, Received) {
    let shards = shards.max(1);
    if let Some(bytes) = batch.encoded() {
        return prepare_encoded(bytes, batch.item_count(), shards, keys, trusted);
    }
    let spans = batch.item_count();
    let mut out: Vec<(ShardBatch, wire::SpanEncoder)> = (0..shards)
        .map(|_| {
            let mut batch = ShardBatch::default();
            batch.spans.reserve(spans / shards + 1);
            // Room for typical spans (about 350 bytes), capped: the area doubles if needed.
            let room = (spans / shards * 384).min(4 << 20);
            (batch, wire::SpanEncoder::with_room(room))
        })
        .collect();
    let mut received = Received::default();
    for rs in batch.into_data().resource_spans {
        let mut resource = rs.resource;
        let mut marked = handoff::marker(resource.as_ref());
        if marked.is_some() && !trusted {
            // Not a peer: the marker is an ordinary attribute and decides nothing.
            received.untrusted += rs
                .scope_spans
                .iter()
                .map(|ss| ss.spans.len())
                .sum::<usize>();
            marked = None;
        }
        let handed = match marked {
            None => false,
            Some(Marker::Spans) => {
                handoff::unmark(&mut resource);
                true
            }
            Some(Marker::Decision { keep }) => {
                for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                    if let Some(id) = trace_key(&span.trace_id) {
                        let shard = (id as u64 % shards as u64) as usize;
                        out[shard].0.decisions.push((id, keep));
                        received.decisions += 1;
                    }
                }
                continue;
            }
        };
        // One resource for all of its scopes.
        let group_mask = key_mask(
            resource.as_ref().map_or(&[][..], |r| &r.attributes[..]),
            keys,
        );
        let head = Arc::new(ResourceHead::new(resource, rs.schema_url));
        for ss in rs.scope_spans {
            let scoped = Arc::new(Scoped::new(Arc::clone(&head), ss.scope, ss.schema_url));
            for span in &ss.spans {
                let id = trace_key(&span.trace_id);
                if handed {
                    received.spans += 1;
                    received.traces.extend(id);
                }
                // The trace id's low bytes are random (W3C Level 2).
                let shard = id.map_or(0, |id| (id as u64 % shards as u64) as usize);
                let (part, encoder) = &mut out[shard];
                encoder.push(span);
                part.spans.push(SpanMeta {
                    id,
                    end: encoder.used(),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    mask: key_mask(&span.attributes, keys),
                    status: span.status.as_ref().map_or(0, |s| s.code.clamp(0, 2) as u8),
                    sampled_flag: span.flags & 0x01 != 0,
                    root: span.parent_span_id.is_empty(),
                });
            }
            // A group for each shard that got spans of this one.
            for (part, _) in &mut out {
                let n = part.spans.len();
                if n > part.groups.last().map_or(0, |(_, _, end)| *end) {
                    part.groups.push((Arc::clone(&scoped), group_mask, n));
                }
            }
            // `ss.spans` (decoded) is freed here.
        }
    }
    let parts = out
        .into_iter()
        .map(|(mut part, encoder)| {
            part.bytes = encoder.into_bytes();
            part
        })
        .collect();
    (parts, received)
}

/// [`prepare_counting`] for a batch that holds the request's bytes (ADR 005): each span's
/// bytes are filed as the request carries them, and only the summary's fields are read
/// in place (ids, times, status, flags, attribute keys); resources and scopes, one per
/// group, are decoded. No span is decoded or encoded.
fn prepare_encoded(
    bytes: &[u8],
    spans: usize,
    shards: usize,
    keys: &[String],
    trusted: bool,
) -> (Vec<ShardBatch>, Received) {
    use otel_pipeline_core::wire::{Wire, fields};
    let mut out: Vec<ShardBatch> = (0..shards)
        .map(|_| {
            let mut part = ShardBatch::default();
            part.spans.reserve(spans / shards + 1);
            // Its share of the bytes and an eighth more: trace ids spread evenly, and a
            // shard that gets more grows. (An eighth of the whole request per shard made
            // 64 shards reserve and count nine times the request, and refuse for it.)
            let share = bytes.len() / shards;
            part.bytes
                .reserve((share + share / 8 + 256).min(bytes.len()));
            part
        })
        .collect();
    let mut received = Received::default();
    for (f, rs) in fields(bytes) {
        let (1, Wire::Len(rs)) = (f, rs) else {
            continue;
        };
        let (mut resource, resource_schema_url) = head::<Resource>(rs);
        let mut marked = handoff::marker(resource.as_ref());
        if marked.is_some() && !trusted {
            // Not a peer: the marker is an ordinary attribute and decides nothing.
            received.untrusted += fields(rs)
                .filter_map(|(f, ss)| match (f, ss) {
                    (2, Wire::Len(ss)) => Some(ss),
                    _ => None,
                })
                .map(|ss| fields(ss).filter(|(f, _)| *f == 2).count())
                .sum::<usize>();
            marked = None;
        }
        let handed = match marked {
            None => false,
            Some(Marker::Spans) => {
                handoff::unmark(&mut resource);
                true
            }
            Some(Marker::Decision { keep }) => {
                for (f, ss) in fields(rs) {
                    let (2, Wire::Len(ss)) = (f, ss) else {
                        continue;
                    };
                    for (f, span) in fields(ss) {
                        let (2, Wire::Len(span)) = (f, span) else {
                            continue;
                        };
                        if let Some(id) = trace_key(otel_pipeline_core::wire::trace_id(span)) {
                            let shard = (id as u64 % shards as u64) as usize;
                            out[shard].decisions.push((id, keep));
                            received.decisions += 1;
                        }
                    }
                }
                continue;
            }
        };
        let group_mask = key_mask(
            resource.as_ref().map_or(&[][..], |r| &r.attributes[..]),
            keys,
        );
        let scopes = fields(rs).filter_map(|field| match field {
            (2, Wire::Len(ss)) => Some(ss),
            _ => None,
        });
        // One resource for all of its scopes.
        let shared = Arc::new(ResourceHead::new(resource, resource_schema_url));
        for ss in scopes {
            let (scope, scope_schema_url) = head(ss);
            let scoped = Arc::new(Scoped::new(Arc::clone(&shared), scope, scope_schema_url));
            for (f, span) in fields(ss) {
                let (2, Wire::Len(span)) = (f, span) else {
                    continue;
                };
                let meta = span_meta(span, keys);
                if handed {
                    received.spans += 1;
                    received.traces.extend(meta.id);
                }
                // The trace id's low bytes are random (W3C Level 2).
                let shard = meta.id.map_or(0, |id| (id as u64 % shards as u64) as usize);
                let part = &mut out[shard];
                part.bytes.extend_from_slice(span);
                part.spans.push(SpanMeta {
                    end: part.bytes.len(),
                    ..meta
                });
            }
            // A group for each shard that got spans of this one.
            for part in &mut out {
                let n = part.spans.len();
                if n > part.groups.last().map_or(0, |(_, _, end)| *end) {
                    part.groups.push((Arc::clone(&scoped), group_mask, n));
                }
            }
        }
    }
    // What a part holds is counted against the byte bound: leave no large unused room.
    for part in &mut out {
        if part.bytes.capacity() > 2 * part.bytes.len() + 4096 {
            part.bytes.shrink_to_fit();
        }
    }
    (out, received)
}

/// The message in field 1 (a resource or scope) and the schema URL in field 3 of an
/// encoded `ResourceSpans` or `ScopeSpans`, as prost reads them: a message given twice is
/// merged (repeated fields append, scalars take the later value), a string keeps its last.
fn head<M: prost::Message + Default>(body: &[u8]) -> (Option<M>, String) {
    use otel_pipeline_core::wire::{Wire, fields};
    let (mut message, mut schema_url): (Option<M>, String) = (None, String::new());
    for (f, v) in fields(body) {
        match (f, v) {
            (1, Wire::Len(m)) => {
                let mut merged = message.take().unwrap_or_default();
                // The request passed `check_traces`, so this does not fail; if it did, the
                // part read so far stays, as prost's error would have refused it whole.
                let _ = merged.merge(m);
                message = Some(merged);
            }
            (3, Wire::Len(u)) => schema_url = String::from_utf8_lossy(u).into(),
            _ => {}
        }
    }
    (message, schema_url)
}

/// The summary of one encoded span (its `end` left for the caller to set).
#[inline]
fn span_meta(span: &[u8], keys: &[String]) -> SpanMeta {
    use otel_pipeline_core::wire::{Wire, fields};
    let mut meta = SpanMeta {
        id: None,
        end: 0,
        start_ns: 0,
        end_ns: 0,
        mask: 0,
        status: 0,
        sampled_flag: false,
        root: true,
    };
    for (f, v) in fields(span) {
        match (f, v) {
            (1, Wire::Len(id)) => meta.id = trace_key(id),
            (4, Wire::Len(parent)) => meta.root = parent.is_empty(),
            (7, Wire::Fixed64(t)) => meta.start_ns = t,
            (8, Wire::Fixed64(t)) => meta.end_ns = t,
            (9, Wire::Len(kv)) if !keys.is_empty() => {
                // The last `key` field is the key, as prost reads it.
                let key = fields(kv)
                    .filter_map(|(f, k)| match (f, k) {
                        (1, Wire::Len(k)) => Some(k),
                        _ => None,
                    })
                    .last()
                    .unwrap_or_default();
                if let Some(i) = keys.iter().position(|k| k.as_bytes() == key) {
                    meta.mask |= 1 << i;
                }
            }
            (15, Wire::Len(status)) => {
                for (f, c) in fields(status) {
                    if let (3, Wire::Varint(c)) = (f, c) {
                        meta.status = (c as i32).clamp(0, 2) as u8;
                    }
                }
            }
            (16, Wire::Fixed32(flags)) => meta.sampled_flag = flags & 0x01 != 0,
            _ => {}
        }
    }
    meta
}

/// The consumer built by [`TailSampler`].
#[derive(Debug)]
pub struct TailSamplingConsumer {
    shards: Vec<mpsc::Sender<ShardBatch>>,
    keys: Arc<[String]>,
    queued: Arc<Queued>,
    handoff: Arc<HandoffStats>,
    /// Whose hand-off markers count (`handoff.accept_from`).
    peers: config::HandoffConfig,
    /// The journal, once started (with `storage`).
    journal: Option<Arc<std::sync::OnceLock<Arc<journal::Journal>>>>,
}

/// Bytes waiting in the shards' channels, bounded so that they count toward the sampler's
/// memory bound: a batch that would pass `cap` is refused (back-pressure) instead.
#[derive(Debug)]
struct Queued {
    bytes: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl Queued {
    fn release(&self, n: usize) {
        self.bytes
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Consumer<Traces> for TailSamplingConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        use std::sync::atomic::Ordering;
        if self.shards.iter().any(mpsc::Sender::is_closed) {
            return Err(ConsumeError::refused(
                batch,
                "tail sampler is shutting down",
            ));
        }
        // The encoded size is close to what the shard batches will hold.
        let estimate = batch.encoded_len();
        if self.queued.bytes.load(Ordering::Relaxed) + estimate > self.queued.cap {
            return Err(ConsumeError::refused(
                batch,
                "tail sampler: the shards' queues hold their share of max_buffered_bytes; retry",
            ));
        }
        let subject = batch.client.as_ref().and_then(|c| c.auth("subject"));
        let trusted = self.peers.accepts(subject);
        // With a journal, the request is on disk before it is taken.
        let record = match &self.journal {
            None => None,
            Some(cell) => {
                let Some(j) = cell.get() else {
                    return Err(ConsumeError::refused(
                        batch,
                        "tail sampler: its journal is not open yet",
                    ));
                };
                match j.append_spans(&batch.to_bytes(), trusted).await {
                    Ok(id) => Some((Arc::clone(j), id)),
                    Err(e) => {
                        tracing::warn!(error = %e, "tail sampler: journal append failed; the request is refused");
                        return Err(ConsumeError::refused(
                            batch,
                            "tail sampler: its journal is full or failing; retry",
                        ));
                    }
                }
            }
        };
        let (mut parts, received) = prepare_counting(batch, self.shards.len(), &self.keys, trusted);
        if let Some((j, id)) = &record {
            let mut traces = AHashSet::new();
            for p in &mut parts {
                p.record = Some(*id);
                traces.extend(p.spans.iter().filter_map(|m| m.id));
            }
            j.register(*id, traces);
        }
        if received.untrusted > 0 {
            self.handoff.untrusted_spans.add(received.untrusted as u64);
        }
        if received.spans > 0 || received.decisions > 0 {
            let h = &self.handoff;
            h.received_traces.add(received.traces.len() as u64);
            h.received_spans.add(received.spans as u64);
            h.received_decisions.add(received.decisions as u64);
        }
        let held: usize = parts.iter().map(ShardBatch::held_bytes).sum();
        self.queued.bytes.fetch_add(held, Ordering::Relaxed);
        let mut parts = parts.into_iter().enumerate();
        while let Some((shard, spans)) = parts.next() {
            if spans.is_empty() {
                self.queued.release(spans.held_bytes());
                continue;
            }
            if let Err(mpsc::error::SendError(spans)) = self.shards[shard].send(spans).await {
                // Shutdown raced us: this part and the ones not sent yet were accepted by
                // nobody; say so.
                let rest: Vec<ShardBatch> = parts.map(|(_, p)| p).collect();
                self.queued.release(
                    spans.held_bytes() + rest.iter().map(ShardBatch::held_bytes).sum::<usize>(),
                );
                let lost = spans.len() + rest.iter().map(ShardBatch::len).sum::<usize>();
                return Err(ConsumeError::rejected(
                    lost,
                    "tail sampler shut down while accepting",
                ));
            }
        }
        Ok(())
    }
}

struct Workers<N> {
    next: Mutex<Option<N>>,
    cores: Mutex<Vec<(TailSamplingCore, mpsc::Receiver<ShardBatch>)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop_tx: watch::Sender<bool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    telemetry: Arc<ComponentTelemetry>,
    drop_on_shutdown: bool,
    clock: SharedClock,
    queued: Arc<Queued>,
    stats: Arc<Stats>,
    live: Arc<LivePolicies>,
    handoff: Option<Arc<HandoffSink>>,
    /// With `storage`: where to open the journal, and the cell the consumer reads it from.
    storage: Option<(FileStorageConfig, String)>,
    journal: Arc<std::sync::OnceLock<Arc<journal::Journal>>>,
    keys: Arc<[String]>,
}

/// Where a draining sampler sends what it holds, and until when.
struct HandoffSink {
    child: Child<BoxConsumer<Traces>>,
    /// Set at shutdown: when the shards stop handing off and decide the rest here.
    until: Mutex<Option<Instant>>,
    decisions: bool,
    stats: Arc<HandoffStats>,
}

/// What every shard task shares.
struct ShardEnv<N> {
    next: N,
    live: Arc<LivePolicies>,
    deadline: Arc<Mutex<Option<Instant>>>,
    telemetry: Arc<ComponentTelemetry>,
    drop_on_shutdown: bool,
    clock: SharedClock,
    queued: Arc<Queued>,
    handoff: Option<Arc<HandoffSink>>,
    journal: Option<Arc<journal::Journal>>,
}

impl Processor<Traces> for TailSampler {
    type Consumer<N: Consumer<Traces>> = TailSamplingConsumer;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<Traces>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<TailSamplingConsumer, BuildError> {
        let start = self.clock.now();
        let policies =
            Self::compile(&self.config, start).map_err(|e| ctx.invalid(e.path, e.message))?;
        let shards = if self.config.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.config.shards
        };
        let names: Vec<String> = self
            .config
            .policies
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let telemetry = ctx.telemetry();
        let stats = Arc::new(Stats::new(Arc::clone(&telemetry), &names));
        let handoff_stats = Arc::new(HandoffStats::new(&telemetry));
        let handoff = match (self.handoff, &self.config.handoff) {
            (Some(exporter), config) => Some(Arc::new(HandoffSink {
                child: ctx.children().exporter::<Traces, _>(exporter)?,
                until: Mutex::new(None),
                decisions: config.as_ref().is_none_or(|c| c.decisions),
                stats: Arc::clone(&handoff_stats),
            })),
            // Only obeying peers' hand-offs, handing off none itself.
            (None, Some(c)) if c.exporter.trim().is_empty() && !c.accept_from.is_empty() => None,
            (None, Some(_)) => {
                return Err(ctx.invalid(
                    "handoff.exporter",
                    "no exporter to hand off to: name one under exporters (YAML), or pass it with TailSampler::with_handoff",
                ));
            }
            (None, None) => None,
        };
        let live = Arc::new(LivePolicies::default());
        let config = Arc::new(self.config);
        let mut senders = Vec::with_capacity(shards);
        let mut cores = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(256);
            senders.push(tx);
            cores.push((
                TailSamplingCore::new(
                    Arc::clone(&config),
                    policies.clone(),
                    shards,
                    Arc::clone(&stats),
                ),
                rx,
            ));
        }
        let (stop_tx, _) = watch::channel(false);
        let keys = Arc::clone(&cores[0].0.keys);
        *self.handle.0.lock() = Some(Live {
            stats: Arc::clone(&stats),
            handoff: Arc::clone(&handoff_stats),
            policies: Arc::clone(&live),
            config: Arc::clone(&config),
            keys: Arc::clone(&keys),
            clock: Arc::clone(&self.clock),
        });
        // The channels may hold a sixteenth of the buffer's bound on top of it.
        let queued = Arc::new(Queued {
            bytes: std::sync::atomic::AtomicUsize::new(0),
            cap: match config.max_buffered_bytes {
                0 => usize::MAX,
                n => (n / 16).max(1 << 20),
            },
        });
        let journal_cell = Arc::new(std::sync::OnceLock::new());
        let storage_on = self.storage.is_some();
        ctx.register_lifecycle(Arc::new(Workers {
            storage: self.storage,
            journal: Arc::clone(&journal_cell),
            keys: Arc::clone(&keys),
            next: Mutex::new(Some(next)),
            cores: Mutex::new(cores),
            tasks: Mutex::new(Vec::new()),
            stop_tx,
            deadline: Arc::new(Mutex::new(None)),
            telemetry,
            drop_on_shutdown: config.drop_pending_traces_on_shutdown,
            clock: self.clock,
            queued: Arc::clone(&queued),
            stats,
            live,
            handoff,
        }));
        Ok(TailSamplingConsumer {
            shards: senders,
            keys,
            queued,
            handoff: handoff_stats,
            peers: config.handoff.clone().unwrap_or_default(),
            journal: storage_on.then_some(journal_cell),
        })
    }
}

impl<N: Consumer<Traces>> Workers<N> {
    /// Open the journal and take back what it holds: decisions into the shards' caches,
    /// then the requests, one at a time, with their arrival times; what is due is
    /// decided and delivered as the replay goes, so memory stays within the sampler's
    /// own bounds.
    async fn replay(
        &self,
        storage: &(FileStorageConfig, String),
        cores: &mut [(TailSamplingCore, mpsc::Receiver<ShardBatch>)],
        next: &N,
    ) -> Result<Arc<journal::Journal>, BoxError> {
        use journal::event;
        let (config, owner) = storage.clone();
        let telemetry = Arc::clone(&self.telemetry);
        let decision_wait = cores
            .first()
            .map_or(Duration::from_secs(30), |c| c.0.config.decision_wait);
        let j = tokio::task::spawn_blocking(move || {
            journal::Journal::open(&config, &owner, decision_wait, &telemetry)
                .map_err(|e| format!("storage: {}: {e}", config.owner_dir(&owner).display()))
        })
        .await
        .map_err(|e| format!("storage: {e}"))??;
        let j = Arc::new(j);
        let shards = cores.len().max(1);
        for (core, _) in cores.iter_mut() {
            core.journal.on = true;
        }
        let recovered = j.log.recovered();
        // Decisions first, so spans of traces decided before the crash are not decided
        // (and delivered) twice.
        for (id, kind) in recovered
            .iter()
            .filter(|(_, k)| *k == journal::KIND_DECISIONS)
        {
            let parsed = j
                .log
                .read(*id)
                .ok()
                .and_then(|r| journal::parse_decisions(&r.payload));
            let Some(decisions) = parsed else {
                j.events[event::UNREADABLE].add(1);
                j.log.release(&[*id]);
                continue;
            };
            let _ = kind;
            for (trace, keep) in decisions {
                let core = &mut cores[(trace as u64 % shards as u64) as usize].0;
                core.take_decision(trace, keep);
                core.journal.skip.insert(trace);
                j.events[event::RECOVERED_DECISIONS].add(1);
            }
            j.keep_recovered_decisions(*id);
        }
        let redelivery = Redelivery {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        let mut requests = 0u64;
        for (id, _) in recovered.iter().filter(|(_, k)| *k == journal::KIND_SPANS) {
            let read = j.log.read(*id).ok();
            let parsed = read
                .as_ref()
                .and_then(|r| journal::parse_spans(&r.payload))
                .and_then(|(arrival, trusted, body)| {
                    Batch::<Traces>::from_encoded(bytes::Bytes::copy_from_slice(body))
                        .ok()
                        .map(|b| (arrival, trusted, b))
                });
            let Some((arrival, trusted, batch)) = parsed else {
                j.events[event::UNREADABLE].add(1);
                j.log.release(&[*id]);
                continue;
            };
            requests += 1;
            let parts = prepare_counting(batch, shards, &self.keys, trusted).0;
            let mut traces = AHashSet::new();
            for p in &parts {
                traces.extend(p.spans.iter().filter_map(|m| m.id));
            }
            j.register(*id, traces);
            let age = std::time::SystemTime::now()
                .duration_since(arrival)
                .unwrap_or_default();
            let now = self.clock.now();
            let at = now.checked_sub(age).unwrap_or(now);
            for (shard, mut part) in parts.into_iter().enumerate() {
                if part.is_empty() {
                    continue;
                }
                part.record = Some(*id);
                let core = &mut cores[shard].0;
                core.ingest(&part, at);
                core.decide_due(self.clock.now());
                if let Some(out) = core.take_output() {
                    redelivery
                        .deliver(next, Batch::new(out), &self.deadline, &self.telemetry)
                        .await;
                }
                let (decisions, resolved) = core.take_journal();
                j.commit(&decisions, &resolved);
            }
        }
        let mut skipped = 0;
        for (core, _) in cores.iter_mut() {
            core.journal.skip = AHashSet::new();
            skipped += std::mem::take(&mut core.journal.skipped);
            let (decisions, resolved) = core.take_journal();
            j.commit(&decisions, &resolved);
        }
        j.events[event::SKIPPED].add(skipped);
        j.events[event::RECOVERED_REQUESTS].add(requests);
        if requests > 0 {
            tracing::info!(
                requests,
                skipped_spans = skipped,
                "tail sampler: took back what the journal held"
            );
        }
        let _ = self.journal.set(Arc::clone(&j));
        Ok(j)
    }
}

impl<N: Consumer<Traces>> Lifecycle for Workers<N> {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            if let Some(h) = &self.handoff {
                h.child.start().await?;
            }
            let next = self
                .next
                .lock()
                .take()
                .ok_or("tail sampler started twice")?;
            let mut cores = std::mem::take(&mut *self.cores.lock());
            let journal = match &self.storage {
                Some(storage) => Some(self.replay(storage, &mut cores, &next).await?),
                None => None,
            };
            let env = Arc::new(ShardEnv {
                live: Arc::clone(&self.live),
                next,
                journal,
                deadline: Arc::clone(&self.deadline),
                telemetry: Arc::clone(&self.telemetry),
                drop_on_shutdown: self.drop_on_shutdown,
                clock: Arc::clone(&self.clock),
                queued: Arc::clone(&self.queued),
                handoff: self.handoff.clone(),
            });
            let mut tasks = self.tasks.lock();
            for (core, rx) in cores {
                tasks.push(tokio::spawn(run_shard(
                    core,
                    rx,
                    self.stop_tx.subscribe(),
                    Arc::clone(&env),
                )));
            }
            Ok(())
        })
    }

    fn shutdown(&self, deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            // The pipeline abandons a stage at its deadline, so the shards stop delivering
            // a little before it, and count what they still hold themselves. A shard still
            // running after that is stopped, and the spans it held (the buffered gauge)
            // are counted for it.
            let (count_by, join_by) = stage_deadlines(deadline);
            *self.deadline.lock() = Some(count_by);
            // The hand-off takes up to half the time; what is left is decided here and
            // delivered in the rest, while the hand-off's exporter drains.
            let now = Instant::now();
            if let Some(h) = &self.handoff {
                *h.until.lock() = Some(now + count_by.saturating_duration_since(now) / 2);
            }
            let _ = self.stop_tx.send(true);
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let timed_out = join_until(tasks, join_by).await;
            if let Some(h) = &self.handoff
                && let Err(e) = h.child.shutdown(count_by).await
            {
                tracing::warn!(
                    error = %e,
                    "tail sampler: the hand-off exporter did not drain cleanly; give it \
                     `sending_queue: {{ enabled: false }}` so that what it cannot deliver \
                     is decided here instead"
                );
            }
            let left = self.stats.spans.get();
            if let Some(j) = self.journal.get() {
                j.close();
                if timed_out && left > 0 {
                    // Journaled: decided after the next start, not lost.
                    tracing::info!(
                        spans = left,
                        "tail sampler: spans still buffered at the deadline stay in the journal for the next start"
                    );
                    self.stats.spans.set(0);
                    self.stats.traces.set(0);
                    self.stats.bytes.set(0);
                    return deadline_outcome(timed_out, &self.telemetry);
                }
            }
            if timed_out && left > 0 {
                self.telemetry.add_dropped(
                    DropReason::SHUTDOWN_DEADLINE,
                    usize::try_from(left).unwrap_or(0),
                );
                self.stats.spans.set(0);
                self.stats.traces.set(0);
                self.stats.bytes.set(0);
            }
            deadline_outcome(timed_out, &self.telemetry)
        })
    }
}

async fn run_shard<N: Consumer<Traces>>(
    mut core: TailSamplingCore,
    mut rx: mpsc::Receiver<ShardBatch>,
    mut stop: watch::Receiver<bool>,
    env: Arc<ShardEnv<N>>,
) {
    let ShardEnv {
        next,
        live,
        deadline,
        telemetry,
        drop_on_shutdown,
        clock,
        queued,
        handoff,
        journal,
    } = &*env;
    let next_due = |due: Option<Instant>| async move {
        match due {
            Some(t) => clock.sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    let redelivery = Redelivery {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
    };
    let stop_watch = stop.clone();
    // A delivery that hangs past shutdown's deadline is counted, never lost quietly.
    let deliver = |out: ExportTraceServiceRequest| {
        redelivery.deliver_until_deadline(next, Batch::new(out), deadline, &stop_watch, telemetry)
    };
    loop {
        let waiting = core.must_wait();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = next_due(core.next_due()) => {
                core.refresh(live);
                core.decide_due(clock.now());
            }
            received = rx.recv(), if !waiting => match received {
                Some(spans) => {
                    core.refresh(live);
                    queued.release(spans.held_bytes());
                    let now = clock.now();
                    core.ingest(&spans, now);
                    // Decisions stay on time even while a backlog is ingested.
                    core.decide_due(now);
                }
                None => break,
            },
        }
        if let Some(out) = core.take_output() {
            deliver(out).await;
        }
        if let Some(j) = journal {
            let (decisions, resolved) = core.take_journal();
            if !decisions.is_empty() || !resolved.is_empty() {
                j.commit(&decisions, &resolved);
            }
        }
    }
    // Shutdown: take what is queued, decide everything on what arrived, deliver. Once the
    // deadline has passed, what is still buffered is dropped and counted.
    rx.close();
    let now = clock.now();
    while let Some(spans) = rx.recv().await {
        queued.release(spans.held_bytes());
        core.ingest(&spans, now);
    }
    let out_of_time = (*deadline.lock()).is_some_and(|d| Instant::now() >= d);
    if let Some(h) = handoff.as_deref().filter(|_| !out_of_time) {
        hand_off(&mut core, h).await;
    }
    let out_of_time = (*deadline.lock()).is_some_and(|d| Instant::now() >= d);
    let drop = if out_of_time {
        Some(DropReason::SHUTDOWN_DEADLINE)
    } else {
        drop_on_shutdown.then_some(DROPPED_ON_SHUTDOWN)
    };
    core.refresh(live);
    core.decide_all(now, drop);
    if let Some(out) = core.take_output() {
        deliver(out).await;
    }
    // With a journal, what ran out of time stays on disk for the next start.
    let out_of_time = (*deadline.lock()).is_some_and(|d| Instant::now() >= d);
    if let Some(j) = journal
        && !out_of_time
    {
        let (decisions, resolved) = core.take_journal();
        j.commit(&decisions, &resolved);
    }
}

/// Spans per hand-off request: about 0.7 MiB of typical spans, well inside the 4 MiB a
/// gRPC server takes by default.
const HANDOFF_SPANS: usize = 2048;
/// Decisions per hand-off request (about 60 bytes each).
const HANDOFF_DECISIONS: usize = 16_384;

/// Send a shard's undecided traces, then its decisions, until the hand-off's time is up.
/// What is not sent stays buffered, to be decided here.
async fn hand_off(core: &mut TailSamplingCore, h: &HandoffSink) {
    let started = Instant::now();
    let until = (*h.until.lock()).unwrap_or(started + Duration::from_secs(5));
    let (mut traces, mut spans, mut bytes, mut decisions) = (0u64, 0u64, 0u64, 0u64);
    let mut sending = true;
    while let Some((ids, req, n)) = core.handoff_chunk(HANDOFF_SPANS) {
        let size = prost::Message::encoded_len(&req) as u64;
        match send_until(h.child.consumer(), req, until).await {
            Sent::All => {
                core.forget(&ids, n);
                traces += ids.len() as u64;
                spans += n as u64;
                bytes += size;
            }
            // Peers took part of the chunk (a router over several, one of them refusing):
            // what they took is theirs now and is forgotten here; only the rest is
            // decided here. Deciding the whole chunk here would export the taken traces
            // twice.
            Sent::Part(left) => {
                let left_ids: AHashSet<u128> = left
                    .data()
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| &ss.spans)
                    .filter_map(|s| trace_key(&s.trace_id))
                    .collect();
                let taken: Vec<u128> = ids
                    .iter()
                    .copied()
                    .filter(|id| !left_ids.contains(id))
                    .collect();
                let taken_spans = n.saturating_sub(left.item_count());
                core.forget(&taken, taken_spans);
                traces += taken.len() as u64;
                spans += taken_spans as u64;
                sending = false;
                break;
            }
            Sent::Unknown => {
                sending = false;
                break;
            }
        }
    }
    if sending && h.decisions {
        // Decisions help late spans only: they get a second at most, so a set that is
        // shutting down together does not wait on each other.
        let until = until.min(Instant::now() + Duration::from_secs(1));
        let (sampled, not_sampled) = core.decided();
        'decisions: for (ids, keep) in [(sampled, true), (not_sampled, false)] {
            for chunk in ids.chunks(HANDOFF_DECISIONS) {
                let req = handoff::decisions(chunk, keep);
                let size = prost::Message::encoded_len(&req) as u64;
                if !matches!(send_until(h.child.consumer(), req, until).await, Sent::All) {
                    break 'decisions;
                }
                decisions += chunk.len() as u64;
                bytes += size;
            }
        }
    }
    let failed = core.buffered_traces() as u64;
    let s = &h.stats;
    s.sent_traces.add(traces);
    s.sent_spans.add(spans);
    s.sent_bytes.add(bytes);
    s.sent_decisions.add(decisions);
    s.failed_traces.add(failed);
    if traces + decisions + failed > 0 {
        tracing::info!(
            traces,
            spans,
            bytes,
            decisions,
            failed,
            took_ms = started.elapsed().as_millis() as u64,
            "tail sampler: handed buffered traces and decisions to their new owners; the failed ones are decided here"
        );
    }
}

/// What the hand-off's exporter took of one request.
#[derive(Debug)]
enum Sent {
    /// All of it.
    All,
    /// All but this (refused to the end): the rest is the peers'.
    Part(Batch<Traces>),
    /// Not known: nothing is assumed taken (no peer, a rejection, out of time).
    Unknown,
}

/// Hand one request to the hand-off's exporter, waiting out refusals (full queues) for up
/// to a second, until `until`. A refusal hands back just what was refused (a router over
/// several peers refuses only what its refusing peers had): that is what is retried, and
/// what [`Sent::Part`] says was not taken.
async fn send_until(
    consumer: &BoxConsumer<Traces>,
    req: ExportTraceServiceRequest,
    until: Instant,
) -> Sent {
    let mut batch = Batch::new(req);
    let mut pause = Duration::from_millis(10);
    let refusals_until = Instant::now() + Duration::from_secs(1);
    let whole = batch.item_count();
    loop {
        // Once peers took part, what is still being sent is kept: if this attempt ends
        // without an answer, that part is decided here, and only that part.
        let in_flight = (batch.item_count() < whole).then(|| batch.clone());
        match tokio::time::timeout_at(until, consumer.consume(batch)).await {
            Ok(Ok(())) => return Sent::All,
            Ok(Err(ConsumeError::Refused(r))) => {
                let now = Instant::now();
                if now + pause >= until || now >= refusals_until {
                    return if r.batch.item_count() < whole {
                        Sent::Part(r.batch)
                    } else {
                        Sent::Unknown
                    };
                }
                batch = r.batch;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Ok(Err(ConsumeError::Rejected(_))) | Err(_) => {
                return in_flight.map_or(Sent::Unknown, Sent::Part);
            }
        }
    }
}

/// The sampler's engine for one shard, driven by hand: for this workspace's benches, behind
/// the `internals` feature. Not part of the API: it may change in any release.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    use std::sync::Arc;

    use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
    use otel_pipeline_core::{Batch, ComponentTelemetry, Traces};
    use tokio::time::Instant;

    use super::{ShardBatch, TailSampler, TailSamplingConfig, TailSamplingCore};
    use crate::config::ConfigError;

    /// One shard's engine.
    #[derive(Debug)]
    pub struct Engine(TailSamplingCore);

    /// A batch encoded for the engine (what a shard receives).
    #[derive(Debug)]
    pub struct Prepared(ShardBatch);

    impl Engine {
        /// An engine with the policies of `config`, counting into `telemetry`.
        pub fn new(
            config: TailSamplingConfig,
            telemetry: Arc<ComponentTelemetry>,
        ) -> Result<Self, ConfigError> {
            TailSampler::core(config, telemetry).map(Self)
        }

        /// Encode a batch's spans as a shard holds them.
        pub fn prepare(&self, batch: Batch<Traces>) -> Prepared {
            Prepared(self.0.prepare(batch, 1).remove(0))
        }

        /// File the prepared spans under their traces.
        pub fn ingest(&mut self, batch: &Prepared, now: Instant) {
            self.0.ingest(&batch.0, now);
        }

        /// Decide every buffered trace now.
        pub fn decide_all(&mut self, now: Instant) {
            self.0.decide_all(now, None);
        }

        /// The kept spans decided so far.
        pub fn take_output(&mut self) -> Option<ExportTraceServiceRequest> {
            self.0.take_output()
        }
    }

    /// The first difference between a reader of request bytes (trace id, span summary,
    /// attribute reads, resource and scope heads, splits, pack and unpack, the fast span
    /// decoder) and prost's decode of `request`; `Ok` when there is none, or when
    /// `check_traces` refuses the request. For the differential fuzz target.
    pub fn check_readers(request: &[u8]) -> Result<(), String> {
        super::differential::check_readers(request)
    }
}

#[cfg(any(test, feature = "internals"))]
mod differential;

#[cfg(test)]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_goes_first_in_ot() {
        assert_eq!(with_threshold("", "f3333333333333"), "ot=th:f3333333333333");
        assert_eq!(
            with_threshold("ot=rv:abcdef01234567;th:8,vendor=x", "c"),
            "ot=th:c;rv:abcdef01234567,vendor=x"
        );
    }

    #[test]
    fn decision_cache_forgets_the_oldest() {
        let mut c = DecisionCache::new(2);
        c.insert(1);
        c.insert(2);
        c.insert(3);
        assert!(!c.contains(1) && c.contains(2) && c.contains(3));
    }
}
