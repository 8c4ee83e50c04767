//! The pod metadata cache: compact pod records, indexed for the lookups enrichment makes.
//!
//! - A pod is kept as a [`PodRecord`]: its identity, placement, owner, the labels and
//!   annotations extraction asks for, and its containers. managedFields, the rest of the
//!   spec and status are never stored.
//! - What pods share is stored once: strings (namespace, node, label keys and values), the
//!   owner, whole label and annotation sets, and the container list of a pod template
//!   (names and images). The pods of one Deployment differ only in their UID, name, IPs,
//!   start time and container IDs.
//! - UIDs and container IDs in their usual form (a UUID, 64 hex digits) are kept as bytes.
//! - Indexes: every pod IP (`status.podIPs`, both families), the pod UID, and every
//!   container ID. Pods on the host network share the node's IP and are not indexed by IP.
//! - A deleted pod stays for `deleted_grace` so late spans still enrich. A new pod that
//!   takes over its IP (a StatefulSet restart) is indexed at once, and the old pod's expiry
//!   removes the IP only if it still points at the old pod.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::RwLock;
use tokio::time::Instant;

/// Values stored once and shared by every record that has them.
#[derive(Debug)]
struct Shared<T: ?Sized + Eq + Hash>(HashSet<Arc<T>, ahash::RandomState>);

impl<T: ?Sized + Eq + Hash> Default for Shared<T> {
    fn default() -> Self {
        Self(HashSet::default())
    }
}

impl<T: ?Sized + Eq + Hash> Shared<T> {
    fn get_or(&mut self, value: &T, make: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        if let Some(v) = self.0.get(value) {
            return Arc::clone(v);
        }
        let v = make(value);
        self.0.insert(Arc::clone(&v));
        v
    }

    /// Forget values no record uses any more.
    fn trim(&mut self) {
        self.0.retain(|v| Arc::strong_count(v) > 1);
    }
}

/// A label or annotation set: `(key, value)` pairs, sorted by key.
pub type Pairs = Arc<[(Arc<str>, Arc<str>)]>;

/// Everything a cache shares between its records.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: Shared<str>,
    pairs: Shared<[(Arc<str>, Arc<str>)]>,
    containers: Shared<[ContainerSpec]>,
    owners: Shared<Owner>,
}

impl Interner {
    pub(crate) fn get(&mut self, s: &str) -> Arc<str> {
        self.strings.get_or(s, |v| Arc::from(v))
    }

    fn pairs(&mut self, list: &[(Arc<str>, Arc<str>)]) -> Pairs {
        self.pairs.get_or(list, |v| Arc::from(v))
    }

    fn containers(&mut self, list: &[ContainerSpec]) -> Arc<[ContainerSpec]> {
        self.containers.get_or(list, |v| Arc::from(v))
    }

    fn owner(&mut self, owner: &Owner) -> Arc<Owner> {
        self.owners.get_or(owner, |o| Arc::new(o.clone()))
    }

    /// Forget what no record uses any more (the sets first: they hold strings).
    fn trim(&mut self) {
        self.pairs.trim();
        self.containers.trim();
        self.owners.trim();
        self.strings.trim();
    }
}

/// Lower-case hex digits into bytes, when `s` is exactly `2 * N` of them.
fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// A pod's UID: 16 bytes when it is a UUID in the API's lower-case form, the text otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PodUid {
    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as bytes.
    Uuid([u8; 16]),
    /// Any other form, kept as written.
    Other(Box<str>),
}

impl PodUid {
    /// The UID written as `s`.
    pub fn parse(s: &str) -> Self {
        let b = s.as_bytes();
        let uuid = (b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-'))
            .then(|| {
                let mut hex = [0u8; 32];
                let mut n = 0;
                for &c in b.iter().filter(|&&c| c != b'-') {
                    *hex.get_mut(n)? = c;
                    n += 1;
                }
                hex_bytes::<16>(&hex[..n])
            })
            .flatten();
        match uuid {
            Some(bytes) => Self::Uuid(bytes),
            None => Self::Other(s.into()),
        }
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(b) => {
                for (i, part) in [&b[..4], &b[4..6], &b[6..8], &b[8..10], &b[10..]]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        f.write_str("-")?;
                    }
                    write_hex(f, part)?;
                }
                Ok(())
            }
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// A container's runtime ID without its `containerd://` (or other) prefix: 32 bytes when it
/// is 64 lower-case hex digits (containerd, CRI-O, Docker), the text otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContainerId {
    /// A SHA-256 in hex, as bytes.
    Sha256([u8; 32]),
    /// Any other form, kept as written.
    Other(Box<str>),
}

impl ContainerId {
    /// The ID written as `s`, with or without a `runtime://` prefix.
    pub fn parse(s: &str) -> Self {
        let s = s.split_once("://").map_or(s, |(_, rest)| rest);
        match hex_bytes::<32>(s.as_bytes()) {
            Some(bytes) => Self::Sha256(bytes),
            None => Self::Other(s.into()),
        }
    }

    /// The key in the container index: eight bytes of the hash, or a hash of the text.
    /// Two IDs with one key are told apart against the record.
    fn key(&self) -> u64 {
        match self {
            Self::Sha256(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            // FNV-1a: stable within the process, and collisions are checked anyway.
            Self::Other(s) => s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, c| {
                (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
            }),
        }
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(b) => write_hex(f, b),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// The controller that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, ...
    pub kind: Arc<str>,
    /// The owner's name.
    pub name: Arc<str>,
    /// The owner's UID.
    pub uid: Arc<str>,
}

/// One container of a pod's spec: what the pods of one template share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerSpec {
    /// `k8s.container.name`.
    pub name: Arc<str>,
    /// The image without its tag (`container.image.name`).
    pub image_name: Arc<str>,
    /// The tag (`container.image.tag`), `latest` when the image names none.
    pub image_tag: Arc<str>,
}

/// A pod, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    uid: PodUid,
    name: Box<str>,
    namespace: Arc<str>,
    node: Option<Arc<str>>,
    start_time: Option<Time>,
    ips: Box<[IpAddr]>,
    owner: Option<Arc<Owner>>,
    labels: Pairs,
    annotations: Pairs,
    containers: Arc<[ContainerSpec]>,
    /// One per container, in the same order: the runtime's ID once it runs.
    container_ids: Box<[Option<ContainerId>]>,
    host_network: bool,
}

impl PodRecord {
    /// `k8s.pod.uid`.
    pub fn uid(&self) -> &PodUid {
        &self.uid
    }

    /// `k8s.pod.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `k8s.namespace.name`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `k8s.node.name`.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// `k8s.pod.start_time`, written as RFC 3339.
    pub fn start_time(&self) -> Option<String> {
        self.start_time.as_ref().map(|t| t.0.to_string())
    }

    /// Every pod IP (a host-network pod's are kept here but not indexed).
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// On the host network: not indexed by IP.
    pub fn host_network(&self) -> bool {
        self.host_network
    }

    /// The controlling owner.
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_deref()
    }

    /// The labels extraction asks for (all of them when it asks by pattern), sorted by key.
    pub fn labels(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.labels
    }

    /// The annotations extraction asks for, sorted by key.
    pub fn annotations(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.annotations
    }

    /// The label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }

    /// The annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    /// Containers in spec order, each with its runtime ID once it runs.
    pub fn containers(
        &self,
    ) -> impl ExactSizeIterator<Item = (&ContainerSpec, Option<&ContainerId>)> {
        self.containers
            .iter()
            .zip(self.container_ids.iter())
            .map(|(c, id)| (c, id.as_ref()))
    }
}

fn find<'a>(pairs: &'a [(Arc<str>, Arc<str>)], key: &str) -> Option<&'a str> {
    pairs
        .binary_search_by(|(k, _)| (**k).cmp(key))
        .ok()
        .map(|i| &*pairs[i].1)
}

/// Which labels and annotations to keep of each pod.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Every label (extraction uses a pattern).
    pub all_labels: bool,
    /// These label keys.
    pub labels: HashSet<String>,
    /// Every annotation.
    pub all_annotations: bool,
    /// These annotation keys.
    pub annotations: HashSet<String>,
}

/// Split `repo/image:tag@digest` into name and tag.
pub(crate) fn split_image(image: &str) -> (&str, &str) {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A `:` after the last `/` is the tag; one before it is a registry port.
    match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => {
            (&without_digest[..i], &without_digest[i + 1..])
        }
        _ => (without_digest, "latest"),
    }
}

/// Turn a pod from the API into a compact record.
pub(crate) fn record(pod: &Pod, keep: &Keep, shared: &mut Interner) -> Option<PodRecord> {
    let meta = &pod.metadata;
    let uid = meta.uid.as_deref()?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|list| list.iter().filter_map(|p| p.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    // The API's maps are sorted by key, and so are the kept pairs.
    let mut keep_pairs = |map: Option<&std::collections::BTreeMap<String, String>>,
                          all: bool,
                          keys: &HashSet<String>| {
        let list: Vec<(Arc<str>, Arc<str>)> = map
            .into_iter()
            .flatten()
            .filter(|(k, _)| all || keys.contains(*k))
            .map(|(k, v)| (shared.get(k), shared.get(v)))
            .collect();
        shared.pairs(&list)
    };
    let labels = keep_pairs(meta.labels.as_ref(), keep.all_labels, &keep.labels);
    let annotations = keep_pairs(
        meta.annotations.as_ref(),
        keep.all_annotations,
        &keep.annotations,
    );
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let spec_containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let containers: Vec<ContainerSpec> = spec_containers
        .iter()
        .map(|c| {
            let (image_name, image_tag) = split_image(c.image.as_deref().unwrap_or(""));
            ContainerSpec {
                name: shared.get(&c.name),
                image_name: shared.get(image_name),
                image_tag: shared.get(image_tag),
            }
        })
        .collect();
    let container_ids = spec_containers
        .iter()
        .map(|c| {
            statuses
                .iter()
                .find(|st| st.name == c.name)
                .and_then(|st| st.container_id.as_deref())
                .map(ContainerId::parse)
        })
        .collect();
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|refs| {
            refs.iter()
                .find(|o| o.controller == Some(true))
                .or(refs.first())
        })
        .map(|o| Owner {
            kind: shared.get(&o.kind),
            name: shared.get(&o.name),
            uid: shared.get(&o.uid),
        })
        .map(|o| shared.owner(&o));
    Some(PodRecord {
        uid: PodUid::parse(uid),
        name: meta.name.as_deref().unwrap_or("").into(),
        namespace: shared.get(meta.namespace.as_deref().unwrap_or("")),
        node: spec
            .and_then(|s| s.node_name.as_deref())
            .map(|n| shared.get(n)),
        start_time: status.and_then(|s| s.start_time.clone()),
        ips: ips.into(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        owner,
        labels,
        annotations,
        containers: shared.containers(&containers),
        container_ids,
    })
}

/// Maps keyed by what the cache makes itself (no untrusted keys): ahash.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Debug, Default)]
struct Index {
    by_uid: Map<PodUid, Arc<PodRecord>>,
    /// Straight to the record: one lookup per span batch.
    by_ip: Map<IpAddr, Arc<PodRecord>>,
    /// By [`ContainerId::key`]; a hit is checked against the record's IDs.
    by_container: Map<u64, Arc<PodRecord>>,
    /// Deleted pods still held, and when their grace ends.
    deleted: Map<PodUid, Instant>,
    /// Deleted pods by when they expire.
    expiring: VecDeque<(Instant, PodUid)>,
    shared: Interner,
}

/// Whether `a` started strictly before `b` (both start times known), as Kubernetes'
/// `Time.Before` answers it.
fn started_before(a: &PodRecord, b: &PodRecord) -> bool {
    matches!((&a.start_time, &b.start_time), (Some(x), Some(y)) if x.0 < y.0)
}

impl Index {
    /// Stop indexing `rec`'s IPs and container IDs that still point at it and that `keep`
    /// (its successor under the same UID) does not have. An IP another live pod also
    /// holds goes to that pod (the one started last), so a reused address is found again
    /// once the old pod is gone.
    fn unindex(&mut self, rec: &PodRecord, keep: Option<&PodRecord>) {
        for ip in &rec.ips {
            if keep.is_none_or(|k| !k.ips.contains(ip))
                && self.by_ip.get(ip).is_some_and(|r| r.uid == rec.uid)
            {
                let heir = self
                    .by_uid
                    .values()
                    .filter(|p| {
                        p.uid != rec.uid
                            && !p.host_network
                            && !self.deleted.contains_key(&p.uid)
                            && p.ips.contains(ip)
                    })
                    .fold(None::<&Arc<PodRecord>>, |best, p| match best {
                        Some(b) if !started_before(b, p) => Some(b),
                        _ => Some(p),
                    })
                    .cloned();
                match heir {
                    Some(p) => {
                        self.by_ip.insert(*ip, p);
                    }
                    None => {
                        self.by_ip.remove(ip);
                    }
                }
            }
        }
        for id in rec.container_ids.iter().flatten() {
            if keep.is_none_or(|k| !k.container_ids.iter().flatten().any(|n| n == id))
                && self
                    .by_container
                    .get(&id.key())
                    .is_some_and(|r| r.uid == rec.uid)
            {
                self.by_container.remove(&id.key());
            }
        }
    }
}

/// The pod metadata cache. Cheap to clone; every clone sees the same pods.
#[derive(Debug, Clone)]
pub struct PodMetadataCache {
    index: Arc<RwLock<Index>>,
    keep: Arc<Keep>,
    deleted_grace: Duration,
}

impl PodMetadataCache {
    /// An empty cache keeping `keep` of each pod, and deleted pods for `deleted_grace`.
    pub fn new(keep: Keep, deleted_grace: Duration) -> Self {
        Self {
            index: Arc::default(),
            keep: Arc::new(keep),
            deleted_grace,
        }
    }

    /// Add or update a pod.
    pub fn apply(&self, pod: &Pod) {
        let mut ix = self.index.write();
        let Some(rec) = record(pod, &self.keep, &mut ix.shared) else {
            return;
        };
        let rec = Arc::new(rec);
        if let Some(old) = ix.by_uid.get(&rec.uid).cloned() {
            // IPs and containers the pod no longer has stop pointing at it.
            ix.unindex(&old, Some(&rec));
        }
        if !rec.host_network {
            for ip in &rec.ips {
                // An IP is reused: a completed Job pod keeps `podIP` in its status while a
                // new pod gets the same address. As the Collector does, the pod that
                // started later keeps the IP, whatever order the updates come in; a pod
                // already deleted (within its grace) always gives way.
                let keeps = ix.by_ip.get(ip).is_some_and(|held| {
                    held.uid != rec.uid
                        && !ix.deleted.contains_key(&held.uid)
                        && started_before(&rec, held)
                });
                if !keeps {
                    ix.by_ip.insert(*ip, Arc::clone(&rec));
                }
            }
        }
        for id in rec.container_ids.iter().flatten() {
            ix.by_container.insert(id.key(), Arc::clone(&rec));
        }
        // An update of a pod marked deleted (a re-list found it after all) revives it.
        ix.deleted.remove(&rec.uid);
        ix.by_uid.insert(rec.uid.clone(), rec);
    }

    /// A pod was deleted: it stays for the grace period.
    pub fn delete(&self, pod: &Pod, now: Instant) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        self.delete_uid(PodUid::parse(uid), now);
    }

    fn delete_uid(&self, uid: PodUid, now: Instant) {
        let mut ix = self.index.write();
        if !ix.by_uid.contains_key(&uid) {
            return;
        }
        let expires = now + self.deleted_grace;
        ix.deleted.insert(uid.clone(), expires);
        ix.expiring.push_back((expires, uid));
    }

    /// After a full list (the first sync, or a re-list after `410 Gone`): pods that were
    /// not listed are treated as deleted now, so they still serve late spans for the grace
    /// period and then go.
    pub fn forget_all_but(&self, listed: &HashSet<String>, now: Instant) {
        let listed: HashSet<PodUid> = listed.iter().map(|u| PodUid::parse(u)).collect();
        let stale: Vec<PodUid> = {
            let ix = self.index.read();
            ix.by_uid
                .keys()
                .filter(|uid| !ix.deleted.contains_key(*uid) && !listed.contains(*uid))
                .cloned()
                .collect()
        };
        for uid in stale {
            self.delete_uid(uid, now);
        }
    }

    /// Drop deleted pods whose grace has passed. An IP or container ID is removed only
    /// while it still points at the expired pod.
    pub fn expire(&self, now: Instant) {
        let mut ix = self.index.write();
        while let Some((at, _)) = ix.expiring.front() {
            if *at > now {
                break;
            }
            let Some((_, uid)) = ix.expiring.pop_front() else {
                break;
            };
            match ix.deleted.get(&uid) {
                Some(gone) if *gone <= now => {}
                // Revived, or deleted again later (a later entry expires it).
                _ => continue,
            }
            ix.deleted.remove(&uid);
            if let Some(rec) = ix.by_uid.remove(&uid) {
                ix.unindex(&rec, None);
            }
        }
        ix.shared.trim();
    }

    /// The pod that has (or, within the grace period, had) `ip`.
    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<PodRecord>> {
        self.index.read().by_ip.get(&ip).cloned()
    }

    /// The pod with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<PodRecord>> {
        self.index.read().by_uid.get(&PodUid::parse(uid)).cloned()
    }

    /// The pod running container `id` (with or without a `runtime://` prefix).
    pub fn by_container_id(&self, id: &str) -> Option<Arc<PodRecord>> {
        let id = ContainerId::parse(id);
        let rec = self.index.read().by_container.get(&id.key()).cloned()?;
        rec.container_ids
            .iter()
            .flatten()
            .any(|c| *c == id)
            .then_some(rec)
    }

    /// Pods held (deleted ones within their grace included).
    pub fn len(&self) -> usize {
        self.index.read().by_uid.len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};

    fn pod(uid: &str, name: &str, ips: &[&str], host: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("shop".into());
        p.spec = Some(PodSpec {
            host_network: Some(host),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn uids_and_container_ids_round_trip_in_every_form() {
        let uuid = "0f1e2d3c-4b5a-4697-8877-665544332211";
        assert!(matches!(PodUid::parse(uuid), PodUid::Uuid(_)));
        assert_eq!(PodUid::parse(uuid).to_string(), uuid);
        // Upper case, other lengths and misplaced dashes are kept as written.
        for other in [
            "0F1E2D3C-4B5A-4697-8877-665544332211",
            "u-db",
            "0f1e2d3c4b5a46978877665544332211----",
            "",
        ] {
            assert_eq!(PodUid::parse(other), PodUid::Other(other.into()));
            assert_eq!(PodUid::parse(other).to_string(), other);
        }
        let hex = "a".repeat(32) + &"0123456789abcdef".repeat(2);
        let id = ContainerId::parse(&format!("containerd://{hex}"));
        assert!(matches!(id, ContainerId::Sha256(_)));
        assert_eq!(id.to_string(), hex);
        assert_eq!(ContainerId::parse(&hex), id);
        let short = ContainerId::parse("docker://abc");
        assert_eq!(short, ContainerId::Other("abc".into()));
        assert_eq!(short.to_string(), "abc");
    }

    #[test]
    fn a_container_id_sharing_an_index_key_is_never_taken_for_another() {
        let cache = PodMetadataCache::new(Keep::default(), Duration::from_secs(60));
        let with_container = |uid: &str, id: &str| {
            let mut p = pod(uid, uid, &[], false);
            p.spec = Some(PodSpec {
                containers: vec![k8s_openapi::api::core::v1::Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
            p.status = Some(PodStatus {
                container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                    name: "app".into(),
                    container_id: Some(format!("containerd://{id}")),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            p
        };
        // The same first eight bytes: the same index key.
        let a = format!("{}{}", "11".repeat(8), "22".repeat(24));
        let b = format!("{}{}", "11".repeat(8), "33".repeat(24));
        cache.apply(&with_container("pod-a", &a));
        assert_eq!(cache.by_container_id(&a).unwrap().name(), "pod-a");
        cache.apply(&with_container("pod-b", &b));
        assert_eq!(cache.by_container_id(&b).unwrap().name(), "pod-b");
        assert!(cache.by_container_id(&a).is_none(), "a miss, never pod-b");
        let rec = cache.by_uid("pod-b").unwrap();
        let (spec, id) = rec.containers().next().unwrap();
        assert_eq!(&*spec.name, "app");
        assert_eq!(id.unwrap().to_string(), b);
    }

    #[test]
    fn images_split_into_name_and_tag() {
        assert_eq!(split_image("nginx"), ("nginx", "latest"));
        assert_eq!(split_image("nginx:1.27"), ("nginx", "1.27"));
        assert_eq!(
            split_image("registry:5000/team/app:v2@sha256:ab"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
    }

    #[test]
    fn dual_stack_host_network_grace_and_ip_reuse() {
        let cache = PodMetadataCache::new(Keep::default(), Duration::from_secs(60));
        let t0 = Instant::now();
        cache.apply(&pod("u1", "web-0", &["10.0.0.5", "fd00::5"], false));
        cache.apply(&pod("h1", "node-exporter", &["192.168.1.10"], true));
        assert_eq!(
            cache.by_ip("fd00::5".parse().unwrap()).unwrap().name(),
            "web-0"
        );
        assert!(
            cache.by_ip("192.168.1.10".parse().unwrap()).is_none(),
            "host network not indexed by IP"
        );
        // web-0 is deleted; a late span still finds it.
        cache.delete(&pod("u1", "web-0", &[], false), t0);
        assert_eq!(
            &*cache
                .by_ip("10.0.0.5".parse().unwrap())
                .unwrap()
                .uid()
                .to_string(),
            "u1"
        );
        // Its successor takes the IP (a StatefulSet restart).
        cache.apply(&pod("u2", "web-0", &["10.0.0.5"], false));
        assert_eq!(
            &*cache
                .by_ip("10.0.0.5".parse().unwrap())
                .unwrap()
                .uid()
                .to_string(),
            "u2"
        );
        // The old pod's expiry neither evicts nor shadows the new one.
        cache.expire(t0 + Duration::from_secs(61));
        assert_eq!(
            &*cache
                .by_ip("10.0.0.5".parse().unwrap())
                .unwrap()
                .uid()
                .to_string(),
            "u2"
        );
        assert!(cache.by_uid("u1").is_none());
        assert!(cache.by_ip("fd00::5".parse().unwrap()).is_none());
    }

    fn started(mut p: Pod, rfc3339: &str) -> Pod {
        if let Some(status) = p.status.as_mut() {
            status.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                rfc3339.parse().unwrap(),
            ));
        }
        p
    }

    /// A completed Job pod keeps its `podIP`; a new pod gets the same address. The newer
    /// pod keeps the IP in both orders of updates and re-lists, and when the old pod is
    /// deleted and expires, the IP still finds the new one.
    #[test]
    fn a_reused_ip_stays_with_the_pod_started_last_in_either_order() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let old = || {
            started(
                pod("old", "job-1", &["10.0.0.5"], false),
                "2026-01-01T00:00:00Z",
            )
        };
        let new = || {
            started(
                pod("new", "web-1", &["10.0.0.5"], false),
                "2026-01-01T01:00:00Z",
            )
        };
        for old_first in [true, false] {
            let cache = PodMetadataCache::new(Keep::default(), Duration::from_secs(60));
            let t0 = Instant::now();
            if old_first {
                cache.apply(&old());
                cache.apply(&new());
            } else {
                cache.apply(&new());
                cache.apply(&old());
            }
            assert_eq!(
                cache.by_ip(ip).unwrap().name(),
                "web-1",
                "old first: {old_first}"
            );
            // A later update to the old pod (its status, say) does not take the IP back.
            cache.apply(&old());
            assert_eq!(cache.by_ip(ip).unwrap().name(), "web-1");
            // A re-list that orders the old pod last does not either.
            cache.apply(&new());
            cache.apply(&old());
            assert_eq!(cache.by_ip(ip).unwrap().name(), "web-1");
            // The old pod goes: the new one is still found by its IP.
            cache.delete(&old(), t0);
            cache.expire(t0 + Duration::from_secs(61));
            assert_eq!(cache.by_ip(ip).unwrap().name(), "web-1");
        }
        // Without start times, the last update wins as before, and when the holder goes
        // the other live pod with the IP is found again.
        let cache = PodMetadataCache::new(Keep::default(), Duration::from_secs(60));
        let t0 = Instant::now();
        cache.apply(&pod("a", "a", &["10.0.0.5"], false));
        cache.apply(&pod("b", "b", &["10.0.0.5"], false));
        assert_eq!(cache.by_ip(ip).unwrap().name(), "b");
        cache.delete(&pod("b", "b", &[], false), t0);
        cache.expire(t0 + Duration::from_secs(61));
        assert_eq!(cache.by_ip(ip).unwrap().name(), "a");
    }
}
