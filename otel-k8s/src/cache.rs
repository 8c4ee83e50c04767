//! The pod metadata cache: compact pod records, indexed for the lookups enrichment makes.
//!
//! - A pod is kept as a [`PodRecord`]: its identity, placement, owner, the labels and
//!   annotations extraction asks for, and its containers, with the repeated strings
//!   (namespace, node, owner, label keys and values) interned. managedFields, the rest of
//!   the spec and status are never stored.
//! - Indexes: every pod IP (`status.podIPs`, both families), the pod UID, and every
//!   container ID. Pods on the host network share the node's IP and are not indexed by IP.
//! - A deleted pod stays for `deleted_grace` so late spans still enrich. A new pod that
//!   takes over its IP (a StatefulSet restart) is indexed at once, and the old pod's expiry
//!   removes the IP only if it still points at the old pod.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::RwLock;
use tokio::time::Instant;

/// Interned strings: each distinct value stored once, shared by every record that has it.
#[derive(Debug, Default)]
pub(crate) struct Interner(HashSet<Arc<str>>);

impl Interner {
    pub(crate) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(v) = self.0.get(s) {
            return Arc::clone(v);
        }
        let v: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&v));
        v
    }

    /// Forget strings no record uses any more.
    fn trim(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// The controller that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, ...
    pub kind: Arc<str>,
    /// The owner's name.
    pub name: Arc<str>,
    /// The owner's UID.
    pub uid: Arc<str>,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// `k8s.container.name`.
    pub name: Arc<str>,
    /// The image without its tag (`container.image.name`).
    pub image_name: Arc<str>,
    /// The tag (`container.image.tag`), `latest` when the image names none.
    pub image_tag: Arc<str>,
    /// The runtime's container ID without the `containerd://` prefix, once running.
    pub id: Option<Arc<str>>,
}

/// A pod, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// `k8s.pod.uid`.
    pub uid: Arc<str>,
    /// `k8s.pod.name`.
    pub name: Arc<str>,
    /// `k8s.namespace.name`.
    pub namespace: Arc<str>,
    /// `k8s.node.name`.
    pub node: Option<Arc<str>>,
    /// `k8s.pod.start_time`, RFC 3339.
    pub start_time: Option<Arc<str>>,
    /// Every pod IP (empty for host-network pods' index, kept here for reference).
    pub ips: Vec<IpAddr>,
    /// On the host network: not indexed by IP.
    pub host_network: bool,
    /// The controlling owner.
    pub owner: Option<Owner>,
    /// The labels extraction asks for (all of them when it asks by pattern).
    pub labels: Vec<(Arc<str>, Arc<str>)>,
    /// The annotations extraction asks for.
    pub annotations: Vec<(Arc<str>, Arc<str>)>,
    /// Containers, in spec order.
    pub containers: Vec<ContainerRecord>,
}

impl PodRecord {
    /// The label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
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
pub(crate) fn record(pod: &Pod, keep: &Keep, strings: &mut Interner) -> Option<PodRecord> {
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
    let keep_pairs = |map: Option<&std::collections::BTreeMap<String, String>>,
                      all: bool,
                      keys: &HashSet<String>,
                      strings: &mut Interner| {
        map.map(|m| {
            m.iter()
                .filter(|(k, _)| all || keys.contains(*k))
                .map(|(k, v)| (strings.get(k), strings.get(v)))
                .collect()
        })
        .unwrap_or_default()
    };
    let statuses = status.and_then(|s| s.container_statuses.as_ref());
    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .map(|c| {
                    let image = c.image.as_deref().unwrap_or("");
                    let (image_name, image_tag) = split_image(image);
                    let id = statuses
                        .and_then(|list| list.iter().find(|st| st.name == c.name))
                        .and_then(|st| st.container_id.as_deref())
                        .map(|id| Arc::from(id.split_once("://").map_or(id, |(_, rest)| rest)));
                    ContainerRecord {
                        name: strings.get(&c.name),
                        image_name: strings.get(image_name),
                        image_tag: strings.get(image_tag),
                        id,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|refs| {
            refs.iter()
                .find(|o| o.controller == Some(true))
                .or(refs.first())
        })
        .map(|o| Owner {
            kind: strings.get(&o.kind),
            name: strings.get(&o.name),
            uid: strings.get(&o.uid),
        });
    Some(PodRecord {
        // Unique per pod: not interned (an interner entry would only add to them).
        uid: Arc::from(uid),
        name: Arc::from(meta.name.as_deref().unwrap_or("")),
        namespace: strings.get(meta.namespace.as_deref().unwrap_or("")),
        node: spec
            .and_then(|s| s.node_name.as_deref())
            .map(|n| strings.get(n)),
        start_time: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| Arc::from(t.0.to_string().as_str())),
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        owner,
        labels: keep_pairs(meta.labels.as_ref(), keep.all_labels, &keep.labels, strings),
        annotations: keep_pairs(
            meta.annotations.as_ref(),
            keep.all_annotations,
            &keep.annotations,
            strings,
        ),
        containers,
    })
}

/// Maps keyed by strings and addresses the cache makes itself (no untrusted keys): ahash.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Debug, Default)]
struct Index {
    by_uid: Map<Arc<str>, Arc<PodRecord>>,
    /// Straight to the record: one lookup per span batch.
    by_ip: Map<IpAddr, Arc<PodRecord>>,
    by_container: Map<Arc<str>, Arc<PodRecord>>,
    /// Deleted pods still held, and when their grace ends.
    deleted: Map<Arc<str>, Instant>,
    /// Deleted pods by when they expire.
    expiring: VecDeque<(Instant, Arc<str>)>,
    strings: Interner,
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
        let Some(rec) = record(pod, &self.keep, &mut ix.strings) else {
            return;
        };
        let rec = Arc::new(rec);
        let same = |r: &Arc<PodRecord>| r.uid == rec.uid;
        if let Some(old) = ix.by_uid.get(&rec.uid).cloned() {
            // IPs and containers the pod no longer has stop pointing at it.
            for ip in &old.ips {
                if !rec.ips.contains(ip) && ix.by_ip.get(ip).is_some_and(same) {
                    ix.by_ip.remove(ip);
                }
            }
            for c in &old.containers {
                if let Some(id) = &c.id
                    && !rec.containers.iter().any(|n| n.id.as_ref() == Some(id))
                {
                    ix.by_container.remove(id);
                }
            }
        }
        if !rec.host_network {
            for ip in &rec.ips {
                ix.by_ip.insert(*ip, Arc::clone(&rec));
            }
        }
        for c in &rec.containers {
            if let Some(id) = &c.id {
                ix.by_container.insert(Arc::clone(id), Arc::clone(&rec));
            }
        }
        // An update of a pod marked deleted (a re-list found it after all) revives it.
        ix.deleted.remove(&rec.uid);
        ix.by_uid.insert(Arc::clone(&rec.uid), rec);
    }

    /// A pod was deleted: it stays for the grace period.
    pub fn delete(&self, pod: &Pod, now: Instant) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let mut ix = self.index.write();
        let Some(uid) = ix.by_uid.get_key_value(uid).map(|(k, _)| Arc::clone(k)) else {
            return;
        };
        let expires = now + self.deleted_grace;
        ix.deleted.insert(Arc::clone(&uid), expires);
        ix.expiring.push_back((expires, uid));
    }

    /// After a full list (the first sync, or a re-list after `410 Gone`): pods that were
    /// not listed are treated as deleted now, so they still serve late spans for the grace
    /// period and then go.
    pub fn forget_all_but(&self, listed: &HashSet<String>, now: Instant) {
        let stale: Vec<Pod> = {
            let ix = self.index.read();
            ix.by_uid
                .keys()
                .filter(|uid| !ix.deleted.contains_key(*uid) && !listed.contains(&***uid))
                .map(|uid| {
                    let mut p = Pod::default();
                    p.metadata.uid = Some(uid.to_string());
                    p
                })
                .collect()
        };
        for p in &stale {
            self.delete(p, now);
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
            let Some(rec) = ix.by_uid.remove(&uid) else {
                continue;
            };
            for ip in &rec.ips {
                if ix.by_ip.get(ip).is_some_and(|r| r.uid == uid) {
                    ix.by_ip.remove(ip);
                }
            }
            for c in &rec.containers {
                if let Some(id) = &c.id
                    && ix.by_container.get(id).is_some_and(|r| r.uid == uid)
                {
                    ix.by_container.remove(id);
                }
            }
        }
        ix.strings.trim();
    }

    /// The pod that has (or, within the grace period, had) `ip`.
    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<PodRecord>> {
        self.index.read().by_ip.get(&ip).cloned()
    }

    /// The pod with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<PodRecord>> {
        self.index.read().by_uid.get(uid).cloned()
    }

    /// The pod running container `id` (with or without a `runtime://` prefix).
    pub fn by_container_id(&self, id: &str) -> Option<Arc<PodRecord>> {
        let id = id.split_once("://").map_or(id, |(_, rest)| rest);
        self.index.read().by_container.get(id).cloned()
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
            &*cache.by_ip("fd00::5".parse().unwrap()).unwrap().name,
            "web-0"
        );
        assert!(
            cache.by_ip("192.168.1.10".parse().unwrap()).is_none(),
            "host network not indexed by IP"
        );
        // web-0 is deleted; a late span still finds it.
        cache.delete(&pod("u1", "web-0", &[], false), t0);
        assert_eq!(
            &*cache.by_ip("10.0.0.5".parse().unwrap()).unwrap().uid,
            "u1"
        );
        // Its successor takes the IP (a StatefulSet restart).
        cache.apply(&pod("u2", "web-0", &["10.0.0.5"], false));
        assert_eq!(
            &*cache.by_ip("10.0.0.5".parse().unwrap()).unwrap().uid,
            "u2"
        );
        // The old pod's expiry neither evicts nor shadows the new one.
        cache.expire(t0 + Duration::from_secs(61));
        assert_eq!(
            &*cache.by_ip("10.0.0.5".parse().unwrap()).unwrap().uid,
            "u2"
        );
        assert!(cache.by_uid("u1").is_none());
        assert!(cache.by_ip("fd00::5".parse().unwrap()).is_none());
    }
}
