//! The `k8sattributes` processor's configuration, in the Collector's shape.
//!
//! ```yaml
//! k8sattributes:
//!   auth_type: serviceAccount        # serviceAccount (default), kubeConfig or none
//!   passthrough: false               # true: only tag k8s.pod.ip from the connection
//!   filter:
//!     node_from_env_var: K8S_NODE_NAME  # an agent watches only its own node's pods
//!   extract:
//!     metadata: [k8s.pod.name, k8s.pod.uid, k8s.deployment.name, k8s.namespace.name, k8s.node.name]
//!     labels:
//!       - { tag_name: app.version, key: app.kubernetes.io/version, from: pod }
//!       - { tag_name: team, key: team, from: pod }
//!   pod_association:
//!     - sources: [{ from: resource_attribute, name: k8s.pod.ip }]
//!     - sources: [{ from: connection }]
//! ```

use std::time::Duration;

use serde::Deserialize;

/// How the processor reaches the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AuthType {
    /// The pod's service account (in a cluster). The default.
    #[default]
    #[serde(rename = "serviceAccount")]
    ServiceAccount,
    /// `$KUBECONFIG` or `~/.kube/config`.
    #[serde(rename = "kubeConfig")]
    KubeConfig,
    /// No credentials (a local API server).
    #[serde(rename = "none")]
    None,
}

/// `filter`: which pods to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Only this node's pods.
    #[serde(default)]
    pub node: Option<String>,
    /// Only the node named by this environment variable (the Downward API's node name).
    #[serde(default)]
    pub node_from_env_var: Option<String>,
    /// Only this namespace's pods.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selectors (`op`: `equals` or `not-equals`).
    #[serde(default)]
    pub labels: Vec<SelectorConfig>,
    /// Field selectors.
    #[serde(default)]
    pub fields: Vec<SelectorConfig>,
}

/// One selector term.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// The label or field.
    pub key: String,
    /// Its value.
    pub value: String,
    /// `equals` (default) or `not-equals`.
    #[serde(default)]
    pub op: Option<String>,
}

/// Where a label or annotation is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum From {
    /// The pod (default).
    #[default]
    Pod,
    /// The pod's namespace.
    Namespace,
    /// The pod's node.
    Node,
}

/// One label or annotation to copy onto the resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldExtract {
    /// The resource attribute to set (default `k8s.pod.labels.<key>` /
    /// `k8s.pod.annotations.<key>`, or `$1`-style groups with `key_regex`).
    #[serde(default)]
    pub tag_name: Option<String>,
    /// The key.
    #[serde(default)]
    pub key: Option<String>,
    /// A regex over keys instead of one key.
    #[serde(default)]
    pub key_regex: Option<String>,
    /// Where to read it.
    #[serde(default)]
    pub from: From,
}

/// `extract`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// Resource attributes to set from the pod's metadata.
    #[serde(default = "default_metadata")]
    pub metadata: Vec<String>,
    /// Labels to copy.
    #[serde(default)]
    pub labels: Vec<FieldExtract>,
    /// Annotations to copy.
    #[serde(default)]
    pub annotations: Vec<FieldExtract>,
    /// Accepted for compatibility (the Collector's OTel-semconv switch).
    #[serde(default)]
    pub otel_annotations: bool,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            metadata: default_metadata(),
            labels: Vec::new(),
            annotations: Vec::new(),
            otel_annotations: false,
        }
    }
}

/// The Collector's default extraction.
fn default_metadata() -> Vec<String> {
    [
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.pod.uid",
        "k8s.pod.start_time",
        "k8s.deployment.name",
        "k8s.node.name",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Every metadata attribute this processor can set.
pub(crate) const METADATA: &[&str] = &[
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.pod.ip",
    "k8s.pod.start_time",
    "k8s.pod.hostname",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.replicaset.name",
    "k8s.replicaset.uid",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.job.name",
    "k8s.cronjob.name",
    "k8s.container.name",
    "container.image.name",
    "container.image.tag",
    "container.id",
    "k8s.cluster.uid",
    "service.name",
    "service.version",
    "service.namespace",
    "service.instance.id",
];

/// One source of an association rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `resource_attribute` or `connection`.
    pub from: String,
    /// The resource attribute (`k8s.pod.ip`, `k8s.pod.uid`, `container.id`).
    #[serde(default)]
    pub name: Option<String>,
}

/// One association rule: every source must resolve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationConfig {
    /// The sources.
    pub sources: Vec<SourceConfig>,
}

/// Settings of the `k8sattributes` processor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sAttributesConfig {
    /// How to reach the API server.
    #[serde(default)]
    pub auth_type: AuthType,
    /// Only tag `k8s.pod.ip` from the connection; watch nothing (for an agent that
    /// forwards to a gateway that enriches).
    #[serde(default)]
    pub passthrough: bool,
    /// Which pods to watch.
    #[serde(default)]
    pub filter: FilterConfig,
    /// What to set.
    #[serde(default)]
    pub extract: ExtractConfig,
    /// How to find a batch's pod, rule by rule (default: the `k8s.pod.ip` resource
    /// attribute, then the connection).
    #[serde(default)]
    pub pod_association: Vec<AssociationConfig>,
    /// Hold start-up until the first full sync (ours: readiness waits for it anyway).
    #[serde(default)]
    pub wait_for_metadata: bool,
    /// How long `wait_for_metadata` may take (default 10 s).
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    pub wait_for_metadata_timeout: Option<Duration>,
    /// How long a deleted pod's metadata is kept for late spans (default 2 min).
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    pub deleted_pod_grace: Option<Duration>,
    /// Most ReplicaSet owners remembered (default 1000).
    #[serde(default)]
    pub replicaset_cache_size: Option<usize>,
    /// How long spans from a pod the cache does not know yet are held for its metadata to
    /// arrive (the start-up race; default 2 s; 0 passes them on at once).
    #[serde(default, deserialize_with = "otel_pipeline_core::config::opt_duration")]
    pub hold_unknown_for: Option<Duration>,
    /// Most spans held at once for that (default 10 000); past it, spans pass on
    /// unenriched at once, counted.
    #[serde(default)]
    pub hold_max_spans: Option<usize>,
}

impl Default for K8sAttributesConfig {
    fn default() -> Self {
        Self {
            auth_type: AuthType::ServiceAccount,
            passthrough: false,
            filter: FilterConfig::default(),
            extract: ExtractConfig::default(),
            pod_association: Vec::new(),
            wait_for_metadata: false,
            wait_for_metadata_timeout: None,
            deleted_pod_grace: None,
            replicaset_cache_size: None,
            hold_unknown_for: None,
            hold_max_spans: None,
        }
    }
}
