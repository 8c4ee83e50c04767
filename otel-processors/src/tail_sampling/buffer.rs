//! How the sampler holds spans: a shard's incoming batch of encoded spans, and each
//! trace's buffer of them. A leaf of `tail_sampling`: the engine and the policies import
//! it.

use std::sync::Arc;

use otel_pipeline_core::proto::common::v1::{InstrumentationScope, KeyValue};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::Span;
use tokio::time::Instant;

use super::pack::{self, Dict};
use super::wire;

/// A `ResourceSpans`' resource and schema URL, shared by every scope that came with it:
/// a request's resource is held once however many scopes it has (one copy per scope let
/// a 1 MiB resource with 10 000 scopes take 10 GiB).
#[derive(Debug, Default)]
pub(crate) struct ResourceHead {
    pub(crate) resource: Option<Resource>,
    pub(crate) schema_url: String,
    /// Its OTLP-encoded size, worked out once.
    pub(crate) size: usize,
}

impl ResourceHead {
    pub(crate) fn new(resource: Option<Resource>, schema_url: String) -> Self {
        let size = resource.as_ref().map_or(0, prost::Message::encoded_len) + schema_url.len();
        Self {
            resource,
            schema_url,
            size,
        }
    }
}

/// The resource and scope a group of buffered spans came with, shared by all of them.
#[derive(Debug, Default)]
pub(crate) struct Scoped {
    /// The resource, shared with the other scopes of its `ResourceSpans`.
    pub(crate) head: Arc<ResourceHead>,
    /// Instrumentation scope.
    pub(crate) scope: Option<InstrumentationScope>,
    /// Scope schema URL.
    pub(crate) scope_schema_url: String,
    /// The OTLP-encoded size of the scope (without the resource's, which the head has).
    pub(crate) size: usize,
}

impl Scoped {
    pub(crate) fn new(
        head: Arc<ResourceHead>,
        scope: Option<InstrumentationScope>,
        scope_schema_url: String,
    ) -> Self {
        let size = scope.as_ref().map_or(0, prost::Message::encoded_len) + scope_schema_url.len();
        Self {
            head,
            scope,
            scope_schema_url,
            size,
        }
    }

    /// The resource.
    pub(crate) fn resource(&self) -> Option<&Resource> {
        self.head.resource.as_ref()
    }

    /// The resource's schema URL.
    pub(crate) fn resource_schema_url(&self) -> &str {
        &self.head.schema_url
    }
}

/// What the shard needs to know of a span without reading its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanMeta {
    /// The trace id (`None`: not 16 bytes).
    pub(crate) id: Option<u128>,
    /// Where the span's encoding ends in [`ShardBatch::bytes`].
    pub(crate) end: usize,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// Which of the attribute policies' keys the span's attributes hold.
    pub(crate) mask: u64,
    pub(crate) status: u8,
    pub(crate) sampled_flag: bool,
    pub(crate) root: bool,
}

/// Spans for one shard, already encoded by [`TailSamplingCore::prepare`] on the caller's
/// thread, in groups that share a resource and scope.
///
/// Encoding on the caller's side means the decoded spans are freed by the thread that
/// decoded them (receivers' tasks), which the allocator does fastest, and the work spreads
/// over the callers; the shard only files bytes and decides.
#[derive(Debug, Default)]
pub(crate) struct ShardBatch {
    /// (resource/scope, key mask of the resource, index in `spans` where the group ends).
    pub(crate) groups: Vec<(Arc<Scoped>, u64, usize)>,
    /// The spans' encodings, back to back.
    pub(crate) bytes: Vec<u8>,
    pub(crate) spans: Vec<SpanMeta>,
    /// Decisions a draining peer handed over: (trace id, keep).
    pub(crate) decisions: Vec<(u128, bool)>,
    /// The journal record holding these spans (with `storage`).
    pub(crate) record: Option<otel_pipeline_core::storage::RecordId>,
}

impl ShardBatch {
    /// Spans in the batch.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch holds no span.
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.decisions.is_empty()
    }

    /// The encoding of span `i`.
    /// Heap bytes the batch holds while it waits in a shard's channel.
    pub(crate) fn held_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.spans.capacity() * std::mem::size_of::<SpanMeta>()
            + self.groups.capacity() * std::mem::size_of::<(Arc<Scoped>, u64, usize)>()
            + self.decisions.capacity() * std::mem::size_of::<(u128, bool)>()
    }

    pub(crate) fn body(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.spans[i - 1].end };
        &self.bytes[start..self.spans[i].end]
    }
}

/// The spans buffered for one trace, **encoded** and packed (protobuf, with what repeats
/// across spans numbered in the shard's dictionary: [`pack`]), length-delimited, with a
/// summary of what the cheap policies need.
#[derive(Debug)]
pub(crate) struct TraceBuf {
    /// Packed spans grouped by the resource/scope they came with.
    pub(crate) groups: Vec<(Arc<Scoped>, Vec<u8>)>,
    /// The shard's dictionary the spans are packed with.
    pub(crate) dict: u32,
    /// Heap bytes the packed spans take (their buffers' capacity).
    pub(crate) held: usize,
    /// Span count.
    pub(crate) spans: usize,
    /// OTLP-encoded size of the spans.
    pub(crate) bytes: usize,
    /// Earliest span start.
    pub(crate) min_start: u64,
    /// Latest span end.
    pub(crate) max_end: u64,
    /// Status codes seen: bit 0 unset, bit 1 ok, bit 2 error.
    pub(crate) statuses: u8,
    /// Any span with the W3C sampled flag.
    pub(crate) any_sampled_flag: bool,
    /// Which of the attribute policies' keys occur in the trace (bit i: key i).
    pub(crate) attr_mask: u64,
    /// The trace id.
    pub(crate) trace_id: [u8; 16],
    /// The first span's `tracestate` (for `ot=rv`).
    pub(crate) first_trace_state: String,
    pub(crate) first_seen: Instant,
    pub(crate) due: Instant,
    pub(crate) root_seen: bool,
    /// The journal records holding its spans (with `storage`).
    pub(crate) records: Vec<otel_pipeline_core::storage::RecordId>,
}

impl TraceBuf {
    pub(crate) fn new(
        trace_id: [u8; 16],
        first_trace_state: String,
        now: Instant,
        due: Instant,
        root_seen: bool,
        dict: u32,
    ) -> Self {
        Self {
            groups: Vec::with_capacity(1),
            dict,
            held: 0,
            spans: 0,
            bytes: 0,
            min_start: u64::MAX,
            max_end: 0,
            statuses: 0,
            any_sampled_flag: false,
            attr_mask: 0,
            trace_id,
            first_trace_state,
            first_seen: now,
            due,
            root_seen,
            records: Vec::new(),
        }
    }

    /// Summarise a span and buffer it, packed with `dict` (`scratch`: room to pack in);
    /// returns its OTLP-encoded size (length-delimited), what the limits count. (The
    /// shard counts the group's resource and scope, once for all its traces.)
    /// `group_mask` is the key mask of the group's resource, computed once per group.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        scoped: &Arc<Scoped>,
        group_mask: u64,
        meta: &SpanMeta,
        encoded: Encoded<'_>,
        dict: Option<&mut Dict>,
        scratch: &mut Vec<u8>,
    ) -> usize {
        self.spans += 1;
        self.attr_mask |= group_mask | meta.mask;
        self.min_start = self.min_start.min(meta.start_ns);
        self.max_end = self.max_end.max(meta.end_ns);
        self.statuses |= 1 << meta.status;
        self.any_sampled_flag |= meta.sampled_flag;
        let buf = match self.groups.last_mut() {
            Some((s, buf)) if Arc::ptr_eq(s, scoped) => buf,
            _ => {
                self.groups.push((Arc::clone(scoped), Vec::new()));
                &mut self.groups.last_mut().expect("just pushed").1
            }
        };
        scratch.clear();
        pack::pack(encoded.body, &self.trace_id, dict, scratch);
        let need = wire::delimited_len(encoded.body);
        let packed = wire::delimited_len(scratch);
        let capacity = buf.capacity();
        if encoded.run > need {
            // Room for the run, packed as this span packed.
            let rest = (encoded.run - need) as u128 * packed as u128 / need as u128;
            buf.reserve_exact(packed + rest as usize + rest as usize / 16);
        }
        if buf.capacity() - buf.len() < packed {
            // Grow by about a quarter, not doubling: these buffers are the memory the
            // sampler keeps small.
            buf.reserve_exact(packed.max(buf.len() / 4).max(256));
        }
        wire::append_delimited(scratch, buf);
        self.held += buf.capacity() - capacity;
        self.bytes += need;
        need
    }
}

/// A buffered trace with the dictionary its spans are packed with: what policies read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held<'a> {
    pub(crate) trace: &'a TraceBuf,
    pub(crate) dict: &'a Dict,
}

impl std::ops::Deref for Held<'_> {
    type Target = TraceBuf;

    fn deref(&self) -> &TraceBuf {
        self.trace
    }
}

impl Held<'_> {
    /// Whether `test` holds for any span's encoding (with its resource/scope), spans
    /// unpacked one at a time into one buffer.
    pub(crate) fn any_span(&self, mut test: impl FnMut(&Arc<Scoped>, &[u8]) -> bool) -> bool {
        let mut span = Vec::new();
        for (scoped, buf) in &self.trace.groups {
            for packed in wire::delimited(buf) {
                span.clear();
                if pack::unpack(packed, &self.trace.trace_id, self.dict, &mut span).is_some()
                    && test(scoped, &span)
                {
                    return true;
                }
            }
        }
        false
    }

    /// Decode the spans (for the policies that need whole spans, and for output). A span
    /// that does not unpack or decode is left out (the caller counts the shortfall).
    pub(crate) fn decode(&self) -> Vec<(Arc<Scoped>, Vec<Span>)> {
        let t = self.trace;
        let mut span = Vec::new();
        t.groups
            .iter()
            .map(|(scoped, buf)| {
                let mut spans = Vec::with_capacity(match t.groups.len() {
                    1 => t.spans,
                    _ => 0,
                });
                for packed in wire::delimited(buf) {
                    span.clear();
                    if pack::unpack(packed, &t.trace_id, self.dict, &mut span).is_some()
                        && let Some(s) = wire::decode_span(&span)
                    {
                        spans.push(s);
                    }
                }
                (Arc::clone(scoped), spans)
            })
            .collect()
    }
}

/// A span's encoding, and at the first span of a run of spans of one trace, the room the
/// whole run needs (so the trace's buffer is sized once, not grown span by span).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Encoded<'a> {
    pub(crate) body: &'a [u8],
    pub(crate) run: usize,
}

/// Which of `keys` occur among `attributes` (bit i: key i).
pub(crate) fn key_mask(attributes: &[KeyValue], keys: &[String]) -> u64 {
    let mut mask = 0;
    if !keys.is_empty() {
        for kv in attributes {
            if let Some(i) = keys.iter().position(|k| *k == kv.key) {
                mask |= 1 << i;
            }
        }
    }
    mask
}
