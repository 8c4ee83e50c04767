//! Actions and redaction on a trace request's bytes: the same rules as the decoded path,
//! read and written on the encoding, so a request that reached this stage as bytes is not
//! decoded and encoded again. Attributes are read one at a time; one that a rule changes
//! is written anew and every other field is copied as it is; a span with nothing to
//! change is copied whole.
//!
//! What is not done here goes to the decoded path, so its answer is the decoded path's:
//! a processor with `include`/`exclude` or with actions other than `delete` and `hash`
//! (they read or write other attributes) leaves the request to it, and so does a resource
//! or scope given twice in one message (the decoded request merges them). A span that
//! holds something unusual (a field given twice that the decoder would merge, a summary
//! key such as `redaction.masked.count` a summary would overwrite) is decoded alone,
//! changed by the decoded path, and encoded in its place.

use otel_pipeline_core::proto::common::v1::AnyValue;
use otel_pipeline_core::proto::trace::v1::Span;
use otel_pipeline_core::wire::{
    Wire, close_len_field as close, fields, open_len_field as open, put_len_header, put_varint,
    varint_len,
};
use prost::Message;

use super::{Action, Blocked, CompiledAttributes, Memo, Redaction, Summary, Target};

/// What [`CompiledAttributes::apply_encoded`] made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedRequest {
    /// The new request; `None` when nothing changed.
    pub bytes: Option<Vec<u8>>,
    /// Values redaction removed or masked, as [`CompiledAttributes::apply`] counts them.
    pub redacted: usize,
}

/// Something the byte path leaves to the decoded path.
struct Decode;

/// The keys one item's redaction removed and masked (for its summary), kept from item
/// to item so their room is reused.
#[derive(Default)]
struct Keys<'a> {
    removed: Vec<&'a str>,
    masked: Vec<&'a str>,
}

/// Room reused item after item: the keys of a span (`[0]`) and of one of its events or
/// links (`[1]`), and a status being rewritten.
#[derive(Default)]
struct Walk<'a> {
    keys: [Keys<'a>; 2],
    status: Vec<u8>,
}

/// Attributes at most this long (key and value encoded) are remembered.
const KV_MEMO_LEN: usize = 256;
/// Attributes a memo remembers before starting afresh.
const KV_MEMO_ENTRIES: usize = 2048;
/// Bytes of attributes and their outcomes a memo remembers before starting afresh: with
/// its table (4 096 buckets of 72 bytes), a memo stays under about 420 KiB, and a
/// thread's memos under 1.7 MiB.
const KV_MEMO_BYTES: usize = 128 << 10;
/// Memos a thread keeps (of as many rule sets); past it, the one used least recently goes.
const KV_MEMOS: usize = 4;

/// What the rules made of one attribute (its encoding, of one target), remembered.
struct Judged {
    target: Target,
    kv: Box<[u8]>,
    /// What was written in its place: `None` when it was copied as it was.
    out: Option<Box<[u8]>>,
    /// Where its key is in `kv`, and whether redaction removed or masked it.
    key: std::ops::Range<usize>,
    removed: bool,
    masked: bool,
}

/// One thread's memo of attributes for one rule set. Real attributes repeat whole
/// (`http.request.method: GET`, the same route, host, token) span after span, so an
/// attribute seen twice is answered from here without reading its key and value again:
/// one hash of its bytes, one compare.
struct KvMemo {
    owner: u64,
    bytes: usize,
    hash: ahash::RandomState,
    judged: crate::prehashed::HashKeyed<Judged>,
    seen: crate::prehashed::SeenOnce,
}

thread_local! {
    static KV_MEMO: std::cell::RefCell<Vec<KvMemo>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The memos a span's rewrite uses.
struct Memos<'m> {
    values: Option<&'m mut Memo>,
    kvs: &'m mut KvMemo,
}

/// An attribute value, as far as redaction needs to know it.
enum Val<'a> {
    Str(&'a str),
    /// An array or a map: strings within are masked too.
    Nested,
    Other,
}

/// The `AnyValue` encoded in `v`.
fn val(v: &[u8]) -> Result<Val<'_>, Decode> {
    let mut walk = fields(v);
    let first = walk.next();
    // A oneof given twice: the decoder keeps the last; leave it to the decoder.
    if walk.next().is_some() || !walk.finished() {
        return Err(Decode);
    }
    Ok(match first {
        None => Val::Other,
        Some((1, Wire::Len(s))) => Val::Str(std::str::from_utf8(s).map_err(|_| Decode)?),
        Some((5 | 6, Wire::Len(_))) => Val::Nested,
        Some((2..=4, Wire::Varint(_) | Wire::Fixed64(_)) | (7, Wire::Len(_))) => Val::Other,
        Some(_) => return Err(Decode),
    })
}

/// Append an `AnyValue` holding the string `s`.
fn put_string_value(out: &mut Vec<u8>, s: &str) {
    put_len_header(out, 1, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Append a `KeyValue` as field `field`: `key` and the encoded `AnyValue` `value`.
fn put_kv(out: &mut Vec<u8>, field: u32, key: &str, value: &[u8]) {
    let key_len = if key.is_empty() {
        0
    } else {
        1 + varint_len(key.len() as u64) + key.len()
    };
    put_len_header(
        out,
        field,
        key_len + 1 + varint_len(value.len() as u64) + value.len(),
    );
    if !key.is_empty() {
        put_len_header(out, 1, key.len());
        out.extend_from_slice(key.as_bytes());
    }
    put_len_header(out, 2, value.len());
    out.extend_from_slice(value);
}

/// Append the summary attributes of one item, as the decoded path sets them (the keys
/// sorted and without repeats, the counts with them); whether any was written.
fn put_summary(summary: Summary, keys: &mut Keys<'_>, field: u32, out: &mut Vec<u8>) -> bool {
    if summary == Summary::Silent {
        return false;
    }
    let mut value = Vec::new();
    let mut put = |names: [&str; 2], list: &mut Vec<&str>, out: &mut Vec<u8>| {
        if list.is_empty() {
            return;
        }
        if summary == Summary::Debug {
            let count = list.len();
            if count > 1 {
                list.sort_unstable();
                list.dedup();
            }
            value.clear();
            put_string_value(&mut value, &list.join(","));
            put_kv(out, field, names[0], &value);
            // The count is of every key, repeats too, as the decoded path counts.
            value.clear();
            value.push(3 << 3);
            put_varint(&mut value, count as u64);
        } else {
            value.clear();
            value.push(3 << 3);
            put_varint(&mut value, list.len() as u64);
        }
        put_kv(out, field, names[1], &value);
    };
    let redacted = ["redaction.redacted.keys", "redaction.redacted.count"];
    put(redacted, &mut keys.removed, out);
    put(
        ["redaction.masked.keys", "redaction.masked.count"],
        &mut keys.masked,
        out,
    );
    !(keys.removed.is_empty() && keys.masked.is_empty())
}

impl CompiledAttributes {
    /// Whether trace requests still in their bytes are changed in place
    /// ([`Self::apply_encoded`]): no `include`/`exclude`, and no actions but `delete`
    /// and `hash`.
    pub fn changes_traces_in_place(&self) -> bool {
        self.include.is_none()
            && self.exclude.is_none()
            && self
                .actions
                .iter()
                .all(|a| matches!(a, Action::Delete(_) | Action::Hash(_)))
    }

    /// Apply the actions and redaction to a protobuf-encoded `ExportTraceServiceRequest`
    /// in its bytes, as [`Self::apply`] does to the decoded request: `None` when the
    /// rules or the request need the decoded path (see [`Self::changes_traces_in_place`]);
    /// else the new request (`None` when nothing changed) and the count `apply` gives.
    /// The request must be one that decodes (as a receiver checked it).
    ///
    /// ```
    /// use otel_processors::attributes::{AttributeRedactor, RedactionConfig};
    /// use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
    /// use otel_pipeline_core::testing::generate_traces;
    /// use prost::Message;
    ///
    /// let config: RedactionConfig = otel_processors::from_yaml(
    ///     "processors.redaction",
    ///     "allow_all_keys: true\nblocked_values: ['GET']\n",
    /// ).unwrap();
    /// let rules = AttributeRedactor::redaction(config).compile().unwrap();
    /// let request = generate_traces(2, 2, 1).encode_to_vec();
    /// let done = rules.apply_encoded(&request).unwrap();
    /// let mut decoded = ExportTraceServiceRequest::decode(&request[..]).unwrap();
    /// assert_eq!(rules.apply(&mut decoded), done.redacted);
    /// assert_eq!(decoded, ExportTraceServiceRequest::decode(&done.bytes.unwrap()[..]).unwrap());
    /// ```
    pub fn apply_encoded(&self, request: &[u8]) -> Option<RedactedRequest> {
        if !self.changes_traces_in_place() {
            return None;
        }
        self.rewrite(request).ok()
    }

    /// `f` with this thread's memos: of attributes for these rules, and of the
    /// `blocked_values` (when there are some).
    fn with_memos<R>(&self, f: impl FnOnce(&mut Memos<'_>) -> R) -> R {
        KV_MEMO.with_borrow_mut(|memos| {
            let kvs = crate::prehashed::most_recent(
                memos,
                KV_MEMOS,
                |m| m.owner == self.id,
                || KvMemo {
                    owner: self.id,
                    bytes: 0,
                    hash: ahash::RandomState::new(),
                    judged: Default::default(),
                    seen: Default::default(),
                },
            );
            match self.redaction.as_ref().and_then(|r| r.blocked.as_ref()) {
                Some(b) => b.with_memo(|m| {
                    f(&mut Memos {
                        values: Some(m),
                        kvs,
                    })
                }),
                None => f(&mut Memos { values: None, kvs }),
            }
        })
    }

    /// Whether anything applies to the attributes of `target`.
    fn touches(&self, target: Target) -> bool {
        (!self.actions.is_empty() && self.targets.contains(&target))
            || self
                .redaction
                .as_ref()
                .is_some_and(|r| r.targets.contains(&target))
    }

    fn rewrite(&self, bytes: &[u8]) -> Result<RedactedRequest, Decode> {
        // Every message is written straight into `out`, its length patched in when it
        // is done: no part is built apart and copied in.
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
        let (mut changed, mut redacted) = (false, 0);
        let mut cx = Walk::default();
        let mut top = fields(bytes);
        while let Some((f, w, raw)) = top.next_raw() {
            let (1, Wire::Len(rs)) = (f, w) else {
                out.extend_from_slice(raw);
                continue;
            };
            // As the decoded path: a resource is changed when it has a span, a scope
            // when it has one.
            let has_spans = |ss: &[u8]| fields(ss).any(|(f, _)| f == 2);
            let resource_has_spans = fields(rs).any(|(f, w)| match (f, w) {
                (2, Wire::Len(ss)) => has_spans(ss),
                _ => false,
            });
            let rs_mark = open(&mut out, 1, rs.len());
            let mut resource_seen = false;
            let mut walk = fields(rs);
            while let Some((f, w, raw_f)) = walk.next_raw() {
                match (f, w) {
                    (1, Wire::Len(resource)) if resource_has_spans => {
                        if std::mem::replace(&mut resource_seen, true) {
                            return Err(Decode);
                        }
                        let mark = open(&mut out, 1, resource.len());
                        let n = self.with_memos(|m| {
                            self.item(&mut cx, m, resource, 1, Target::Resource, &mut out)
                        })?;
                        close(&mut out, mark);
                        changed |= n.is_some();
                        redacted += n.unwrap_or(0);
                    }
                    (2, Wire::Len(ss)) => {
                        let mark = open(&mut out, 2, ss.len());
                        let n = self.scope_spans(&mut cx, ss, has_spans(ss), &mut out)?;
                        close(&mut out, mark);
                        changed |= n.is_some();
                        redacted += n.unwrap_or(0);
                    }
                    _ => out.extend_from_slice(raw_f),
                }
            }
            if !walk.finished() {
                return Err(Decode);
            }
            close(&mut out, rs_mark);
        }
        if !top.finished() {
            return Err(Decode);
        }
        Ok(RedactedRequest {
            bytes: changed.then_some(out),
            redacted,
        })
    }

    /// One `ScopeSpans`' fields into `out`: its scope (when it has spans) and its spans;
    /// `Some` with the count when anything changed.
    fn scope_spans<'a>(
        &self,
        cx: &mut Walk<'a>,
        ss: &'a [u8],
        has_spans: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, Decode> {
        let (mut changed, mut redacted, mut scope_seen) = (false, 0, false);
        let spans = self.touches(Target::Span)
            || self.touches(Target::Event)
            || self.touches(Target::Link)
            || self
                .redaction
                .as_ref()
                .is_some_and(|r| r.blocked.is_some() && r.targets.contains(&Target::Status));
        let mut walk = fields(ss);
        while let Some((f, w, raw)) = walk.next_raw() {
            match (f, w) {
                (1, Wire::Len(scope)) if has_spans => {
                    if std::mem::replace(&mut scope_seen, true) {
                        return Err(Decode);
                    }
                    let mark = open(out, 1, scope.len());
                    let n = self.with_memos(|m| self.item(cx, m, scope, 3, Target::Scope, out))?;
                    close(out, mark);
                    changed |= n.is_some();
                    redacted += n.unwrap_or(0);
                }
                (2, Wire::Len(span)) if spans => {
                    let start = out.len();
                    let mark = open(out, 2, span.len());
                    let n = match self.with_memos(|m| self.item(cx, m, span, 9, Target::Span, out))
                    {
                        Ok(n) => {
                            close(out, mark);
                            n
                        }
                        Err(Decode) => {
                            // Decoded alone, changed by the decoded path.
                            out.truncate(start);
                            let mut decoded = Span::decode(span).map_err(|_| Decode)?;
                            let n = self.apply_span(&mut decoded, None);
                            put_len_header(out, 2, decoded.encoded_len());
                            decoded.encode(out).map_err(|_| Decode)?;
                            Some(n)
                        }
                    };
                    changed |= n.is_some();
                    redacted += n.unwrap_or(0);
                }
                _ => out.extend_from_slice(raw),
            }
        }
        if !walk.finished() {
            return Err(Decode);
        }
        Ok(changed.then_some(redacted))
    }

    /// Rewrite one item's fields (a span with its events, links and status; an event; a
    /// link; a resource; a scope) whose attributes are field `attr_field`, into `out`:
    /// `Some` with its count when it changed.
    fn item<'a>(
        &self,
        cx: &mut Walk<'a>,
        memo: &mut Memos<'_>,
        msg: &'a [u8],
        attr_field: u32,
        target: Target,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, Decode> {
        let depth = usize::from(matches!(target, Target::Event | Target::Link));
        cx.keys[depth].removed.clear();
        cx.keys[depth].masked.clear();
        let redaction = self
            .redaction
            .as_ref()
            .filter(|r| r.targets.contains(&target));
        let actions = !self.actions.is_empty() && self.targets.contains(&target);
        let status_blocked = self
            .redaction
            .as_ref()
            .filter(|r| r.targets.contains(&Target::Status))
            .and_then(|r| r.blocked.as_ref());
        let (mut changed, mut redacted) = (false, 0);
        let mut status: Option<bool> = None;
        let mut walk = fields(msg);
        while let Some((f, w, raw)) = walk.next_raw() {
            match (f, w) {
                (f, Wire::Len(kv)) if f == attr_field && (actions || redaction.is_some()) => {
                    changed |= self.kv_remembered(
                        &mut cx.keys[depth],
                        memo,
                        (target, redaction, actions),
                        kv,
                        raw,
                        attr_field,
                        out,
                    )?;
                }
                (11 | 13, Wire::Len(sub)) if target == Target::Span => {
                    let (sub_field, sub_target) = if f == 11 {
                        (3, Target::Event)
                    } else {
                        (4, Target::Link)
                    };
                    if !self.touches(sub_target) {
                        out.extend_from_slice(raw);
                        continue;
                    }
                    let mark = open(out, f, sub.len());
                    let n = self.item(cx, memo, sub, sub_field, sub_target, out)?;
                    close(out, mark);
                    changed |= n.is_some();
                    redacted += n.unwrap_or(0);
                }
                (15, Wire::Len(st)) if target == Target::Span => {
                    // A status given twice merges when decoded.
                    if status.replace(false).is_some() {
                        return Err(Decode);
                    }
                    let (Some(blocked), Some(memo)) = (status_blocked, memo.values.as_deref_mut())
                    else {
                        out.extend_from_slice(raw);
                        continue;
                    };
                    let masked = Self::status(&mut cx.status, blocked, memo, st)?;
                    if masked {
                        put_len_header(out, 15, cx.status.len());
                        out.extend_from_slice(&cx.status);
                    } else {
                        out.extend_from_slice(raw);
                    }
                    status = Some(masked);
                    changed |= masked;
                }
                _ => out.extend_from_slice(raw),
            }
        }
        if !walk.finished() {
            return Err(Decode);
        }
        let status_masked = status == Some(true);
        let keys = &mut cx.keys[depth];
        redacted += match redaction {
            Some(r) => {
                if status_masked {
                    keys.masked.push("status.message");
                }
                let n = keys.removed.len() + keys.masked.len();
                changed |= put_summary(r.summary, keys, attr_field, out);
                n
            }
            None => usize::from(status_masked),
        };
        Ok(changed.then_some(redacted))
    }

    /// A span's status with `blocked_values` masked in its message, into `out`; whether
    /// the message was masked.
    fn status(
        out: &mut Vec<u8>,
        blocked: &Blocked,
        memo: &mut Memo,
        st: &[u8],
    ) -> Result<bool, Decode> {
        out.clear();
        let mut message = None;
        let mut walk = fields(st);
        while let Some((f, w, raw)) = walk.next_raw() {
            match (f, w) {
                (2, Wire::Len(m)) => {
                    if message.is_some() {
                        return Err(Decode);
                    }
                    let m = std::str::from_utf8(m).map_err(|_| Decode)?;
                    message = Some(blocked.judge(memo, m, |masked| match masked {
                        Some(masked) => {
                            put_len_header(out, 2, masked.len());
                            out.extend_from_slice(masked.as_bytes());
                            true
                        }
                        None => {
                            out.extend_from_slice(raw);
                            false
                        }
                    }));
                }
                _ => out.extend_from_slice(raw),
            }
        }
        if !walk.finished() {
            return Err(Decode);
        }
        Ok(message == Some(true))
    }

    /// [`Self::kv`], answered from the memo of attributes when this one was judged
    /// before (for the same target).
    #[allow(clippy::too_many_arguments)]
    fn kv_remembered<'a>(
        &self,
        keys: &mut Keys<'a>,
        memo: &mut Memos<'_>,
        (target, redaction, actions): (Target, Option<&Redaction>, bool),
        kv: &'a [u8],
        raw: &[u8],
        field: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, Decode> {
        if kv.len() > KV_MEMO_LEN {
            return self.kv(
                keys,
                memo.values.as_deref_mut(),
                redaction,
                actions,
                kv,
                raw,
                field,
                out,
            );
        }
        let h = memo.kvs.hash.hash_one((target as u8, kv));
        if let Some(j) = memo.kvs.judged.get(&h)
            && j.target == target
            && *j.kv == *kv
        {
            let key = || std::str::from_utf8(&kv[j.key.clone()]).map_err(|_| Decode);
            if j.removed {
                keys.removed.push(key()?);
            }
            if j.masked {
                keys.masked.push(key()?);
            }
            return Ok(match &j.out {
                None => {
                    out.extend_from_slice(raw);
                    false
                }
                Some(new) => {
                    out.extend_from_slice(new);
                    true
                }
            });
        }
        let (before, removed, masked) = (out.len(), keys.removed.len(), keys.masked.len());
        let changed = self.kv(
            keys,
            memo.values.as_deref_mut(),
            redaction,
            actions,
            kv,
            raw,
            field,
            out,
        )?;
        let kvs = &mut *memo.kvs;
        if !kvs.judged.contains_key(&h) && kvs.seen.again(h, KV_MEMO_ENTRIES) {
            let written = &out[before..];
            let size = kv.len() + if changed { written.len() } else { 0 };
            if kvs.judged.len() >= KV_MEMO_ENTRIES || kvs.bytes + size > KV_MEMO_BYTES {
                kvs.judged.clear();
                kvs.bytes = 0;
            }
            let removed = keys.removed.len() > removed;
            let masked = keys.masked.len() > masked;
            let key = match (removed, masked) {
                (false, false) => 0..0,
                _ => {
                    let k = if removed {
                        keys.removed.last()
                    } else {
                        keys.masked.last()
                    };
                    match k.map(|k| k.as_bytes()).filter(|k| !k.is_empty()) {
                        // The key read from `kv` is a part of it.
                        Some(k) => {
                            let at = k.as_ptr() as usize - kv.as_ptr() as usize;
                            at..at + k.len()
                        }
                        None => 0..0,
                    }
                }
            };
            kvs.bytes += size;
            kvs.judged.insert(
                h,
                Judged {
                    target,
                    kv: kv.into(),
                    out: changed.then(|| written.into()),
                    key,
                    removed,
                    masked,
                },
            );
        }
        Ok(changed)
    }

    /// One attribute: written to `out` as it was, changed, or not at all (removed);
    /// whether it changed. Its key goes into `keys` when redaction removed or masked it.
    #[allow(clippy::too_many_arguments)]
    fn kv<'a>(
        &self,
        keys: &mut Keys<'a>,
        memo: Option<&mut Memo>,
        redaction: Option<&Redaction>,
        actions: bool,
        kv: &'a [u8],
        raw: &[u8],
        field: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, Decode> {
        let (mut key, mut value) = (None, None);
        let mut walk = fields(kv);
        for (f, w) in walk.by_ref() {
            match (f, w) {
                (1, Wire::Len(k)) if key.is_none() => key = Some(k),
                (2, Wire::Len(v)) if value.is_none() => value = Some(v),
                _ => return Err(Decode),
            }
        }
        if !walk.finished() {
            return Err(Decode);
        }
        let key = std::str::from_utf8(key.unwrap_or_default()).map_err(|_| Decode)?;
        // A summary key already there is overwritten by the decoded path's summary.
        if redaction.is_some() && key.starts_with("redaction.") {
            return Err(Decode);
        }
        // The new `AnyValue`, when one was made.
        let mut new_value: Option<Vec<u8>> = None;
        if actions {
            for action in &self.actions {
                match action {
                    Action::Delete(sel) if sel.matches(key) => return Ok(true),
                    Action::Hash(sel) if sel.matches(key) => {
                        let text = match new_value.as_deref().or(value) {
                            None => String::new(),
                            Some(v) => match val(v)? {
                                Val::Str(s) => s.to_string(),
                                _ => super::string_form(&AnyValue::decode(v).map_err(|_| Decode)?),
                            },
                        };
                        let mut v = Vec::with_capacity(66);
                        put_string_value(&mut v, &super::sha256_hex(&text));
                        new_value = Some(v);
                    }
                    _ => {}
                }
            }
        }
        if let Some(r) = redaction {
            let ignored = r.ignored.iter().any(|k| k == key);
            if !(r.allow_all || ignored || r.allowed.iter().any(|k| k == key)) {
                keys.removed.push(key);
                return Ok(true);
            }
            if let (Some(blocked), false, Some(memo)) = (&r.blocked, ignored, memo)
                && let Some(v) = new_value.as_deref().or(value)
            {
                let masked = match val(v)? {
                    Val::Str(s) => blocked.judge(memo, s, |m| {
                        m.map(|m| {
                            let mut v = Vec::with_capacity(m.len() + 2);
                            put_string_value(&mut v, m);
                            v
                        })
                    }),
                    Val::Nested => {
                        let mut decoded = AnyValue::decode(v).map_err(|_| Decode)?;
                        (super::mask_within(&mut decoded, blocked, memo) > 0)
                            .then(|| decoded.encode_to_vec())
                    }
                    Val::Other => None,
                };
                if let Some(m) = masked {
                    keys.masked.push(key);
                    new_value = Some(m);
                }
            }
        }
        match new_value {
            Some(v) => {
                put_kv(out, field, key, &v);
                Ok(true)
            }
            None => {
                out.extend_from_slice(raw);
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AttributeRedactor, AttributesConfig, RedactionConfig};
    use super::*;
    use otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest;
    use otel_pipeline_core::proto::common::v1::{
        ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
    };
    use otel_pipeline_core::proto::resource::v1::Resource;
    use otel_pipeline_core::proto::trace::v1::{ScopeSpans, Status, span};
    use otel_pipeline_core::testing::{SplitMix64, generate_traces};

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    /// Values a redaction rule set below masks, removes, hashes or leaves alone, with
    /// repeats (the memo's second sightings) and one-offs.
    fn value(rng: &mut SplitMix64) -> Value {
        match rng.below(12) {
            0 => s("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"),
            1 => s(&format!("user{}@example.com", rng.below(3))),
            2 => s("card 4111111111111111 used"),
            3 => Value::IntValue(rng.below(1000) as i64),
            4 => Value::BoolValue(true),
            5 => Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(s("a@b.io")),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                ],
            }),
            6 => Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", s("GET /x")), kv("deep", s("x@y.org"))],
            }),
            7 => s(""),
            8 => Value::DoubleValue(1.5),
            _ => s(&format!("plain-{}", rng.below(4))),
        }
    }

    const KEYS: &[&str] = &[
        "http.request.method",
        "db.statement",
        "http.request.header.authorization",
        "user.email",
        "keep.me",
        "ignored.key",
        "x-api-token",
        "",
    ];

    fn attrs(rng: &mut SplitMix64, n: u64) -> Vec<KeyValue> {
        (0..rng.below(n))
            .map(|_| kv(KEYS[rng.below(KEYS.len() as u64) as usize], value(rng)))
            .collect()
    }

    /// A request with secrets everywhere redaction looks: span, event, link, scope and
    /// resource attributes, status messages; spans already summarized; a scope and a
    /// resource without spans.
    fn request(seed: u64) -> ExportTraceServiceRequest {
        let mut rng = SplitMix64::new(seed);
        let mut req = generate_traces(3, 4, seed);
        for rs in &mut req.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                r.attributes.extend(attrs(&mut rng, 4));
            }
            for ss in &mut rs.scope_spans {
                ss.scope = Some(InstrumentationScope {
                    name: "lib".into(),
                    attributes: attrs(&mut rng, 3),
                    ..Default::default()
                });
                for sp in &mut ss.spans {
                    sp.attributes.extend(attrs(&mut rng, 8));
                    if rng.below(3) == 0 {
                        sp.status = Some(Status {
                            message: ["", "card 5555555555554444", "ok", "Bearer abc"]
                                [rng.below(4) as usize]
                                .into(),
                            code: 2,
                        });
                    }
                    for e in &mut sp.events {
                        e.attributes.extend(attrs(&mut rng, 4));
                    }
                    if rng.below(2) == 0 {
                        sp.links.push(span::Link {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            attributes: attrs(&mut rng, 4),
                            ..Default::default()
                        });
                    }
                    if rng.below(10) == 0 {
                        sp.attributes
                            .push(kv("redaction.masked.count", Value::IntValue(9)));
                    }
                }
            }
            // A scope without spans: its attributes stay as they are.
            rs.scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    attributes: vec![kv("user.email", s("a@b.io"))],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        req.resource_spans.push(Default::default());
        req.resource_spans[0]
            .resource
            .get_or_insert_with(Resource::default);
        req
    }

    const RULES: &[(&str, &str)] = &[
        (
            "",
            "allow_all_keys: true\nblocked_values: ['4[0-9]{12}(?:[0-9]{3})?', '5[1-5][0-9]{14}', \
             '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}', '(?i)bearer\\s+[A-Za-z0-9._~+/-]+=*']\nsummary: debug\n",
        ),
        (
            "",
            "allowed_keys: [http.request.method, db.statement, user.email, keep.me, '']\n\
             ignored_keys: [ignored.key]\nblocked_values: ['@', 'GET']\n",
        ),
        (
            "",
            "allowed_keys: [keep.me]\nsummary: debug\napply_to: [span, status, link]\n",
        ),
        (
            "apply_to: [span, event, link, resource, scope]\nactions:\n  \
             - { key: http.request.header.authorization, action: delete }\n  \
             - { key: db.statement, action: hash }\n  \
             - { key: user.email, action: hash }\n  \
             - { pattern: '^x-api-.*', action: delete }\n",
            "",
        ),
        (
            "actions:\n  - { key: keep.me, action: hash }\n  - { key: keep.me, action: delete }\n",
            "allow_all_keys: true\nblocked_values: ['[a-f0-9]{64}', 'plain']\nsummary: silent\n\
             apply_to: [event, status, scope]\n",
        ),
        (
            "actions:\n  - { pattern: '.*', action: hash }\n",
            "allow_all_keys: true\nignored_keys: [ignored.key]\nblocked_values: ['^[0-9a-f]{3}']\n\
             summary: debug\n",
        ),
    ];

    fn rules(attributes: &str, redaction: &str) -> CompiledAttributes {
        let a: AttributesConfig = if attributes.is_empty() {
            AttributesConfig::default()
        } else {
            crate::config::from_yaml("processors.attributes", attributes).expect("config")
        };
        let r = (!redaction.is_empty()).then(|| {
            crate::config::from_yaml::<RedactionConfig>("processors.redaction", redaction)
                .expect("config")
        });
        match r {
            Some(r) => AttributeRedactor::attributes_and_redaction(a, r),
            None => AttributeRedactor::attributes(a),
        }
        .compile()
        .expect("compiles")
    }

    fn check(rules: &CompiledAttributes, bytes: &[u8], what: &str) -> bool {
        let original = ExportTraceServiceRequest::decode(bytes).expect("decodes");
        let mut decoded = original.clone();
        let want = rules.apply(&mut decoded);
        let done = rules.apply_encoded(bytes).expect("in place");
        assert_eq!(done.redacted, want, "counts: {what}");
        assert_eq!(done.bytes.is_some(), decoded != original, "changed: {what}");
        let after = match &done.bytes {
            Some(b) => ExportTraceServiceRequest::decode(&b[..]).expect("decodes"),
            None => original,
        };
        assert_eq!(after, decoded, "{what}");
        done.bytes.is_some()
    }

    /// The byte path gives the decoded path's request and count, rule set by rule set,
    /// on requests with secrets in every place and shape.
    #[test]
    fn the_byte_path_redacts_as_the_decoded_path() {
        let mut changed = 0;
        for (i, (a, r)) in RULES.iter().enumerate() {
            let rules = rules(a, r);
            assert!(rules.changes_traces_in_place(), "rule set {i}");
            // Twice over the same seeds: the second pass answers from the memo.
            for seed in (0..24).chain(0..24) {
                let bytes = request(seed * 7 + i as u64).encode_to_vec();
                changed += usize::from(check(&rules, &bytes, &format!("rules {i}, seed {seed}")));
            }
        }
        assert!(changed > 200, "{changed}");
    }

    /// What protobuf allows and the decoder merges (a status given twice, a resource
    /// given twice) is done as the decoded path does it.
    #[test]
    fn fields_given_twice_go_the_decoded_way() {
        let rules = rules("", RULES[0].1);
        let mut req = request(3);
        let sp = &mut req.resource_spans[0].scope_spans[0].spans[0];
        sp.status = Some(Status {
            message: "first a@b.io".into(),
            code: 1,
        });
        let mut bytes = req.encode_to_vec();
        // Append a second status to the first span: rebuild the request around it.
        let mut second = Vec::new();
        Status {
            message: "then x@y.io".into(),
            code: 0,
        }
        .encode(&mut second)
        .unwrap();
        let span = req.resource_spans[0].scope_spans[0].spans[0].encode_to_vec();
        let mut longer = span.clone();
        put_len_header(&mut longer, 15, second.len());
        longer.extend_from_slice(&second);
        let mut with_twice = req.clone();
        with_twice.resource_spans[0].scope_spans[0].spans.remove(0);
        let rest = with_twice.encode_to_vec();
        // The span, in a scope of its own, in a resource of its own, ahead of the rest.
        let mut ss = Vec::new();
        put_len_header(&mut ss, 2, longer.len());
        ss.extend_from_slice(&longer);
        let mut rs = Vec::new();
        put_len_header(&mut rs, 2, ss.len());
        rs.extend_from_slice(&ss);
        bytes.clear();
        put_len_header(&mut bytes, 1, rs.len());
        bytes.extend_from_slice(&rs);
        bytes.extend_from_slice(&rest);
        assert!(check(&rules, &bytes, "status twice"));
        // A resource given twice: the whole request goes the decoded way.
        let mut twice = Vec::new();
        let resource = Resource {
            attributes: vec![kv("user.email", s("a@b.io"))],
            ..Default::default()
        }
        .encode_to_vec();
        for _ in 0..2 {
            put_len_header(&mut twice, 1, resource.len());
            twice.extend_from_slice(&resource);
        }
        twice.extend_from_slice(&rs);
        let mut request = Vec::new();
        put_len_header(&mut request, 1, twice.len());
        request.extend_from_slice(&twice);
        assert_eq!(rules.apply_encoded(&request), None);
    }

    /// More attributes than a memo holds, each seen twice (so each enters it), and two
    /// rule sets taking turns on one thread: every answer is still the decoded path's.
    #[test]
    fn a_full_memo_starts_afresh_and_rule_sets_keep_their_own() {
        let (a, b) = (rules("", RULES[0].1), rules(RULES[3].0, RULES[1].1));
        for round in 0..2 {
            for chunk in 0..12u64 {
                let mut req = generate_traces(1, 50, chunk);
                for (i, sp) in req.resource_spans[0].scope_spans[0]
                    .spans
                    .iter_mut()
                    .enumerate()
                {
                    let n = chunk * 50 + i as u64;
                    sp.attributes = (0..8)
                        .map(|k| {
                            let v = match k % 3 {
                                0 => format!("u{n}-{k}@example.com"),
                                1 => format!("Bearer t{n}x{k}"),
                                _ => format!("value {n} {k}"),
                            };
                            kv(KEYS[k % KEYS.len()], s(&v))
                        })
                        .collect();
                }
                let bytes = req.encode_to_vec();
                for (name, rules) in [("a", &a), ("b", &b)] {
                    check(
                        rules,
                        &bytes,
                        &format!("{name}: round {round}, chunk {chunk}"),
                    );
                }
            }
        }
    }

    /// A span, scope or resource whose length crosses a varint boundary (127/128 bytes)
    /// as it grows by a summary or shrinks by removed keys is written whole.
    #[test]
    fn lengths_that_take_another_varint_size_are_written_right() {
        let grow = rules("", RULES[0].1);
        let shrink = rules("", "allowed_keys: [keep.me]\nsummary: silent\n");
        let mut checked = 0;
        for pad in 40..140 {
            let mut req = generate_traces(1, 1, 1);
            let sp = &mut req.resource_spans[0].scope_spans[0].spans[0];
            sp.attributes = vec![kv("user.email", s("a@b.io")), kv("keep.me", s("k"))];
            sp.name = "n".repeat(pad);
            let bytes = req.encode_to_vec();
            assert!(check(&grow, &bytes, &format!("grow, pad {pad}")));
            assert!(check(&shrink, &bytes, &format!("shrink, pad {pad}")));
            checked += 1;
        }
        assert_eq!(checked, 100);
    }

    /// Rules that read or set other attributes, or select spans, leave batches to the
    /// decoded path.
    #[test]
    fn rules_that_need_the_decoded_request_say_so() {
        for attributes in [
            "actions:\n  - { key: env, value: prod, action: upsert }\n",
            "actions:\n  - { key: a, from_attribute: b, action: insert }\n",
            "include: { match_type: strict, services: [x] }\nactions:\n  - { key: a, action: delete }\n",
            "actions:\n  - { key: a, action: convert, converted_type: int }\n",
        ] {
            let r = rules(attributes, "");
            assert!(!r.changes_traces_in_place(), "{attributes}");
            assert_eq!(r.apply_encoded(&request(1).encode_to_vec()), None);
        }
    }
}
