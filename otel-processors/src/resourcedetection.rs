//! The `resourcedetection` processor: resource attributes of the host the collector runs
//! on, detected once at start and added to every resource that passes.
//!
//! ```yaml
//! resourcedetection:
//!   detectors: [env, system, ec2, gcp, azure]
//!   timeout: 2s
//!   override: false
//! ```
//!
//! - **`env`**: `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-decoded).
//! - **`system`**: `host.name` (`hostname_sources`: `os`; `dns` reads the same name, as no
//!   resolver lookup is made), `os.type`; with `resource_attributes`, also `host.arch`,
//!   `host.id` (`/etc/machine-id`) and `os.description`.
//! - **`docker`**: the Docker daemon's `/info` over its socket: `host.name`, `os.type`.
//! - **`ec2`**: the instance metadata service (IMDSv2 token, then v1): `cloud.provider`,
//!   `cloud.platform`, `cloud.account.id`, `cloud.region`, `cloud.availability_zone`,
//!   `host.id`, `host.image.id`, `host.type`, `host.name`.
//! - **`ecs`**: the task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`):
//!   `cloud.*`, `aws.ecs.cluster.arn`, `aws.ecs.task.arn`, `aws.ecs.task.family`,
//!   `aws.ecs.task.revision`, `aws.ecs.launchtype`, `aws.ecs.container.arn`,
//!   `container.id`, `container.name`.
//! - **`gcp`**: the Compute Engine metadata server: `cloud.provider`, `cloud.platform`,
//!   `cloud.account.id`, `cloud.region`, `cloud.availability_zone`, `host.id`,
//!   `host.name`, `host.type`.
//! - **`azure`**: the instance metadata service: `cloud.provider`, `cloud.platform`,
//!   `cloud.region`, `cloud.account.id`, `host.id`, `host.name`, `host.type`,
//!   `azure.vm.name`, `azure.vm.size`, `azure.vm.scaleset.name`,
//!   `azure.resourcegroup.name`.
//!
//! Detectors run when the pipeline starts, each bounded by `timeout` (default 5 s): one that
//! fails or times out (a cloud detector off its cloud) adds nothing, and is logged, so
//! start-up is never held past the timeout. The first detector to give an attribute wins.
//! With `override: true` (the default, as the Collector's) detected values replace the
//! resource's; with `false` only missing attributes are added. `attributes` keeps only the
//! listed keys. A detector the Collector has and this build lacks is refused, naming it.
//! Ours: each cloud detector takes an `endpoint` (its metadata service's base URL) for
//! tests and proxies.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, ComponentContext, ComponentId, ConsumeError, Consumer,
    Lifecycle, Logs, Metrics, Processor, Traces,
};
use serde::Deserialize;

use crate::config::ConfigError;

/// One detector's own settings (the Collector's `<detector>:` sections).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Ours: the metadata service's base URL (`http://169.254.169.254`); tests point it
    /// at loopback.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `system`: where the host name comes from (`os`, `dns`).
    #[serde(default)]
    pub hostname_sources: Vec<String>,
    /// Attributes turned on or off: `host.id: {enabled: true}`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, Enabled>,
    /// `ec2`: instance tags to add (needs IAM access): accepted, not read here.
    #[serde(default, rename = "tags")]
    pub _tags: Option<serde::de::IgnoredAny>,
    /// `docker`: accepted; the socket is `/var/run/docker.sock` unless `endpoint` says.
    #[serde(default, rename = "use_docker_socket")]
    pub _use_docker_socket: Option<serde::de::IgnoredAny>,
}

/// `{enabled: bool}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// On or off.
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

/// Configuration of the resource detection processor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDetectionConfig {
    /// Detectors, in order of precedence.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// The longest each detector may take.
    #[serde(
        default = "five_seconds",
        deserialize_with = "otel_pipeline_core::config::duration"
    )]
    pub timeout: Duration,
    /// Detected values replace the resource's own.
    #[serde(default = "yes", rename = "override")]
    pub override_: bool,
    /// Only these detected keys (all when empty); the Collector's older setting.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// `system`.
    #[serde(default)]
    pub system: DetectorConfig,
    /// `docker`.
    #[serde(default)]
    pub docker: DetectorConfig,
    /// `ec2`.
    #[serde(default)]
    pub ec2: DetectorConfig,
    /// `ecs`.
    #[serde(default)]
    pub ecs: DetectorConfig,
    /// `gcp`.
    #[serde(default)]
    pub gcp: DetectorConfig,
    /// `azure`.
    #[serde(default)]
    pub azure: DetectorConfig,
    /// `env` takes no settings.
    #[serde(default, rename = "env")]
    pub _env: Option<serde::de::IgnoredAny>,
    /// HTTP client settings of the Collector's detectors (`client`): accepted.
    #[serde(default, rename = "client")]
    pub _client: Option<serde::de::IgnoredAny>,
}

const OURS: &[&str] = &["env", "system", "docker", "ec2", "ecs", "gcp", "azure"];
const COLLECTORS: &[&str] = &[
    "eks",
    "elasticbeanstalk",
    "lambda",
    "aks",
    "consul",
    "heroku",
    "openshift",
    "k8snode",
    "kubeadm",
    "dynatrace",
    "akamai",
    "scaleway",
    "hetznercloud",
    "upcloud",
    "vultr",
    "oraclecloud",
];

impl ResourceDetectionConfig {
    fn check(&self) -> Result<(), ConfigError> {
        for (i, d) in self.detectors.iter().enumerate() {
            if OURS.contains(&d.as_str()) {
                continue;
            }
            let msg = if COLLECTORS.contains(&d.as_str()) {
                format!(
                    "`{d}` is a detector of the Collector that this build does not include (here: {})",
                    OURS.join(", ")
                )
            } else {
                format!("unknown detector `{d}` (known: {})", OURS.join(", "))
            };
            return Err(ConfigError::new(format!("detectors[{i}]"), msg));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be positive"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// A small HTTP client for metadata services: one request per connection, bounded answers.

/// The largest metadata answer read.
const MAX_ANSWER: usize = 1 << 20;

async fn http(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), BoxError> {
    use http_body_util::{BodyExt, Full, Limited};
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// metadata services are read").into());
    }
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, format!("{host}:{port}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(bytes::Bytes::new()))?)
        .await?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await?
        .to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get_ok(url: &str, headers: &[(&str, &str)]) -> Result<String, BoxError> {
    match http(http::Method::GET, url, headers).await? {
        (200, body) => Ok(body),
        (status, _) => Err(format!("{url}: HTTP {status}").into()),
    }
}

type Attrs = Vec<(String, String)>;

fn push(out: &mut Attrs, k: &str, v: impl Into<String>) {
    let v = v.into();
    if !v.is_empty() {
        out.push((k.to_string(), v));
    }
}

fn json_str(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `env`: `OTEL_RESOURCE_ATTRIBUTES`.
fn detect_env(value: Option<String>) -> Result<Attrs, BoxError> {
    let mut out = Vec::new();
    for pair in value.unwrap_or_default().split(',').map(str::trim) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("OTEL_RESOURCE_ATTRIBUTES: `{pair}` is not key=value"))?;
        push(&mut out, k.trim(), percent_decode(v.trim()));
    }
    Ok(out)
}

fn enabled(c: &DetectorConfig, key: &str, default: bool) -> bool {
    c.resource_attributes
        .get(key)
        .map_or(default, |e| e.enabled)
}

/// `system`: this host.
fn detect_system(c: &DetectorConfig) -> Result<Attrs, BoxError> {
    let mut out = Vec::new();
    if enabled(c, "host.name", true) {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .ok_or("the host name could not be read")?;
        push(&mut out, "host.name", name);
    }
    if enabled(c, "os.type", true) {
        push(&mut out, "os.type", std::env::consts::OS);
    }
    if enabled(c, "host.arch", false) {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "x86",
            other => other,
        };
        push(&mut out, "host.arch", arch);
    }
    if enabled(c, "host.id", false)
        && let Ok(id) = std::fs::read_to_string("/etc/machine-id")
    {
        push(&mut out, "host.id", id.trim());
    }
    if enabled(c, "os.description", false)
        && let Ok(release) = std::fs::read_to_string("/etc/os-release")
    {
        let pretty = release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string());
        if let Some(p) = pretty {
            push(&mut out, "os.description", p);
        }
    }
    Ok(out)
}

/// `docker`: the daemon's `/info`, over its unix socket (or `endpoint`, an http:// URL).
async fn detect_docker(c: &DetectorConfig) -> Result<Attrs, BoxError> {
    let body = match &c.endpoint {
        Some(url) => get_ok(&format!("{}/info", url.trim_end_matches('/')), &[]).await?,
        None => docker_socket_info().await?,
    };
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let mut out = Vec::new();
    push(&mut out, "host.name", json_str(&v, "Name"));
    push(&mut out, "os.type", json_str(&v, "OSType"));
    Ok(out)
}

#[cfg(unix)]
async fn docker_socket_info() -> Result<String, BoxError> {
    use http_body_util::{BodyExt, Full, Limited};
    let stream = tokio::net::UnixStream::connect("/var/run/docker.sock").await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get("/info")
        .header(http::header::HOST, "docker")
        .body(Full::new(bytes::Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("docker /info: HTTP {}", resp.status()).into());
    }
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await?
        .to_bytes();
    driver.abort();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(not(unix))]
async fn docker_socket_info() -> Result<String, BoxError> {
    Err("the docker socket is a unix socket".into())
}

/// `ec2`: IMDSv2 (a session token), falling back to v1.
async fn detect_ec2(c: &DetectorConfig) -> Result<Attrs, BoxError> {
    let base = c
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let token = match http(
        http::Method::PUT,
        &format!("{base}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await
    {
        Ok((200, t)) => Some(t.trim().to_string()),
        _ => None,
    };
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![("X-aws-ec2-metadata-token", t)])
        .unwrap_or_default();
    let doc = get_ok(
        &format!("{base}/latest/dynamic/instance-identity/document"),
        &headers,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&doc)?;
    let mut out = Vec::new();
    push(&mut out, "cloud.provider", "aws");
    push(&mut out, "cloud.platform", "aws_ec2");
    push(&mut out, "cloud.account.id", json_str(&v, "accountId"));
    push(&mut out, "cloud.region", json_str(&v, "region"));
    push(
        &mut out,
        "cloud.availability_zone",
        json_str(&v, "availabilityZone"),
    );
    push(&mut out, "host.id", json_str(&v, "instanceId"));
    push(&mut out, "host.image.id", json_str(&v, "imageId"));
    push(&mut out, "host.type", json_str(&v, "instanceType"));
    if let Ok(name) = get_ok(&format!("{base}/latest/meta-data/hostname"), &headers).await {
        push(&mut out, "host.name", name.trim());
    }
    Ok(out)
}

/// `ecs`: the task metadata endpoint v4.
async fn detect_ecs(c: &DetectorConfig, env_uri: Option<String>) -> Result<Attrs, BoxError> {
    let base = c
        .endpoint
        .clone()
        .or(env_uri)
        .ok_or("not on ECS: ECS_CONTAINER_METADATA_URI_V4 is not set")?;
    let base = base.trim_end_matches('/');
    let task: serde_json::Value =
        serde_json::from_str(&get_ok(&format!("{base}/task"), &[]).await?)?;
    let container: serde_json::Value = serde_json::from_str(&get_ok(base, &[]).await?)?;
    let task_arn = json_str(&task, "TaskARN");
    // arn:aws:ecs:<region>:<account>:task/<cluster>/<id>
    let parts: Vec<&str> = task_arn.split(':').collect();
    let (region, account) = (
        parts.get(3).copied().unwrap_or_default(),
        parts.get(4).copied().unwrap_or_default(),
    );
    let cluster = json_str(&task, "Cluster");
    let cluster_arn = if cluster.starts_with("arn:") || cluster.is_empty() {
        cluster
    } else {
        format!("arn:aws:ecs:{region}:{account}:cluster/{cluster}")
    };
    let mut out = Vec::new();
    push(&mut out, "cloud.provider", "aws");
    push(&mut out, "cloud.platform", "aws_ecs");
    push(&mut out, "cloud.region", region);
    push(&mut out, "cloud.account.id", account);
    push(
        &mut out,
        "cloud.availability_zone",
        json_str(&task, "AvailabilityZone"),
    );
    push(&mut out, "aws.ecs.cluster.arn", cluster_arn);
    push(&mut out, "aws.ecs.task.arn", task_arn.clone());
    push(&mut out, "aws.ecs.task.family", json_str(&task, "Family"));
    push(
        &mut out,
        "aws.ecs.task.revision",
        json_str(&task, "Revision"),
    );
    push(
        &mut out,
        "aws.ecs.launchtype",
        json_str(&task, "LaunchType").to_lowercase(),
    );
    push(
        &mut out,
        "aws.ecs.container.arn",
        json_str(&container, "ContainerARN"),
    );
    push(&mut out, "container.id", json_str(&container, "DockerId"));
    push(&mut out, "container.name", json_str(&container, "Name"));
    Ok(out)
}

/// `gcp`: the Compute Engine metadata server.
async fn detect_gcp(c: &DetectorConfig) -> Result<Attrs, BoxError> {
    let base = c
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://metadata.google.internal".into());
    let base = format!("{}/computeMetadata/v1", base.trim_end_matches('/'));
    let flavor = [("Metadata-Flavor", "Google")];
    let get = |path: &str| {
        let url = format!("{base}/{path}");
        async move { get_ok(&url, &flavor).await.map(|s| s.trim().to_string()) }
    };
    let project = get("project/project-id").await?;
    let mut out = Vec::new();
    push(&mut out, "cloud.provider", "gcp");
    push(&mut out, "cloud.platform", "gcp_compute_engine");
    push(&mut out, "cloud.account.id", project);
    // projects/<n>/zones/<zone>
    if let Ok(zone) = get("instance/zone").await {
        let zone = zone.rsplit('/').next().unwrap_or_default().to_string();
        let region = zone
            .rsplit_once('-')
            .map(|(r, _)| r.to_string())
            .unwrap_or_default();
        push(&mut out, "cloud.availability_zone", zone);
        push(&mut out, "cloud.region", region);
    }
    if let Ok(id) = get("instance/id").await {
        push(&mut out, "host.id", id);
    }
    if let Ok(name) = get("instance/name").await {
        push(&mut out, "host.name", name);
    }
    if let Ok(t) = get("instance/machine-type").await {
        push(
            &mut out,
            "host.type",
            t.rsplit('/').next().unwrap_or_default(),
        );
    }
    Ok(out)
}

/// `azure`: the instance metadata service.
async fn detect_azure(c: &DetectorConfig) -> Result<Attrs, BoxError> {
    let base = c
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://169.254.169.254".into());
    let url = format!(
        "{}/metadata/instance/compute?api-version=2020-09-01&format=json",
        base.trim_end_matches('/')
    );
    let v: serde_json::Value = serde_json::from_str(&get_ok(&url, &[("Metadata", "true")]).await?)?;
    let mut out = Vec::new();
    push(&mut out, "cloud.provider", "azure");
    push(&mut out, "cloud.platform", "azure_vm");
    push(&mut out, "cloud.region", json_str(&v, "location"));
    push(&mut out, "cloud.account.id", json_str(&v, "subscriptionId"));
    push(&mut out, "host.id", json_str(&v, "vmId"));
    push(&mut out, "host.name", json_str(&v, "name"));
    push(&mut out, "host.type", json_str(&v, "vmSize"));
    push(&mut out, "azure.vm.name", json_str(&v, "name"));
    push(&mut out, "azure.vm.size", json_str(&v, "vmSize"));
    push(
        &mut out,
        "azure.vm.scaleset.name",
        json_str(&v, "vmScaleSetName"),
    );
    push(
        &mut out,
        "azure.resourcegroup.name",
        json_str(&v, "resourceGroupName"),
    );
    Ok(out)
}

/// Run every detector, each within the timeout; merge with the first one winning.
async fn detect(config: &ResourceDetectionConfig) -> Vec<KeyValue> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for name in &config.detectors {
        let run = async {
            match name.as_str() {
                "env" => detect_env(std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok()),
                "system" => detect_system(&config.system),
                "docker" => detect_docker(&config.docker).await,
                "ec2" => detect_ec2(&config.ec2).await,
                "ecs" => {
                    detect_ecs(
                        &config.ecs,
                        std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok(),
                    )
                    .await
                }
                "gcp" => detect_gcp(&config.gcp).await,
                "azure" => detect_azure(&config.azure).await,
                other => Err(format!("unknown detector {other}").into()),
            }
        };
        match tokio::time::timeout(config.timeout, run).await {
            Ok(Ok(attrs)) => {
                for (k, v) in attrs {
                    if !merged.iter().any(|(m, _)| *m == k)
                        && (config.attributes.is_empty() || config.attributes.contains(&k))
                    {
                        merged.push((k, v));
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::info!(detector = %name, "resourcedetection: nothing detected: {e}")
            }
            Err(_) => {
                tracing::info!(detector = %name, timeout = ?config.timeout, "resourcedetection: the detector timed out")
            }
        }
    }
    merged
        .into_iter()
        .map(|(key, v)| KeyValue {
            key,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
            ..KeyValue::default()
        })
        .collect()
}

/// Add the detected attributes to a resource's.
fn apply(detected: &[KeyValue], attrs: &mut Vec<KeyValue>, override_: bool) {
    for d in detected {
        match attrs.iter_mut().find(|a| a.key == d.key) {
            Some(a) if override_ => a.value = d.value.clone(),
            Some(_) => {}
            None => attrs.push(d.clone()),
        }
    }
}

/// The resource detection processor.
#[derive(Debug, Clone)]
pub struct ResourceDetection {
    id: ComponentId,
    config: ResourceDetectionConfig,
}

impl ResourceDetection {
    /// With id `resourcedetection`.
    pub fn new(config: ResourceDetectionConfig) -> Self {
        Self {
            id: ComponentId::new("resourcedetection"),
            config,
        }
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }
}

/// What detection found, set once when the pipeline starts.
#[derive(Debug, Default)]
struct Detected(OnceLock<Vec<KeyValue>>);

struct Detect {
    config: ResourceDetectionConfig,
    detected: Arc<Detected>,
}

impl Lifecycle for Detect {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let found = detect(&self.config).await;
            tracing::info!(attributes = found.len(), "resourcedetection: detected");
            let _ = self.detected.0.set(found);
            Ok(())
        })
    }

    fn shutdown(&self, _deadline: tokio::time::Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The consumer built by [`ResourceDetection`].
pub struct DetectionConsumer<S, N> {
    detected: Arc<Detected>,
    override_: bool,
    next: N,
    signal: std::marker::PhantomData<fn(S)>,
}

impl<S, N: std::fmt::Debug> std::fmt::Debug for DetectionConsumer<S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectionConsumer")
            .field("detected", &self.detected)
            .field("next", &self.next)
            .finish()
    }
}

macro_rules! detection_signal {
    ($signal:ty, $field:ident) => {
        impl Processor<$signal> for ResourceDetection {
            type Consumer<N: Consumer<$signal>> = DetectionConsumer<$signal, N>;

            fn id(&self) -> ComponentId {
                self.id.clone()
            }

            fn build<N: Consumer<$signal>>(
                self,
                next: N,
                ctx: &mut ComponentContext<'_>,
            ) -> Result<DetectionConsumer<$signal, N>, BuildError> {
                self.config
                    .check()
                    .map_err(|e| ctx.invalid(e.path, e.message))?;
                let detected = Arc::new(Detected::default());
                let override_ = self.config.override_;
                ctx.register_lifecycle(Arc::new(Detect {
                    config: self.config,
                    detected: Arc::clone(&detected),
                }));
                Ok(DetectionConsumer {
                    detected,
                    override_,
                    next,
                    signal: std::marker::PhantomData,
                })
            }
        }

        impl<N: Consumer<$signal>> Consumer<$signal> for DetectionConsumer<$signal, N> {
            async fn consume(
                &self,
                mut batch: Batch<$signal>,
            ) -> Result<(), ConsumeError<$signal>> {
                if let Some(found) = self.detected.0.get().filter(|f| !f.is_empty()) {
                    for r in &mut batch.data_mut().$field {
                        let res = r.resource.get_or_insert_with(Default::default);
                        apply(found, &mut res.attributes, self.override_);
                    }
                }
                self.next.consume(batch).await
            }
        }
    };
}

detection_signal!(Traces, resource_spans);
detection_signal!(Metrics, resource_metrics);
detection_signal!(Logs, resource_logs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_merging() {
        let attrs = detect_env(Some(
            "service.name=a%20b, deployment.environment=prod".into(),
        ))
        .unwrap();
        assert_eq!(attrs[0], ("service.name".into(), "a b".into()));
        assert!(detect_env(Some("oops".into())).is_err());
        let mut res = vec![KeyValue {
            key: "deployment.environment".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("dev".into())),
            }),
            ..KeyValue::default()
        }];
        // override: false keeps the resource's value; true replaces it.
        let prod = || {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue("prod".into())),
            })
        };
        let found = vec![
            KeyValue {
                key: "deployment.environment".into(),
                value: prod(),
                ..KeyValue::default()
            },
            KeyValue {
                key: "host.name".into(),
                ..KeyValue::default()
            },
        ];
        let mut kept = res.clone();
        apply(&found, &mut kept, false);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].value, res[0].value, "kept");
        apply(&found, &mut res, true);
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].value, prod(), "replaced");
    }

    #[test]
    fn system_reads_this_host() {
        let c = DetectorConfig::default();
        let attrs = detect_system(&c).unwrap();
        assert!(attrs.iter().any(|(k, v)| k == "host.name" && !v.is_empty()));
        assert!(attrs.iter().any(|(k, v)| k == "os.type" && v == "linux"));
    }

    #[test]
    fn unknown_and_missing_detectors_are_named() {
        let c: ResourceDetectionConfig = serde_yaml_ng::from_str("detectors: [env, eks]").unwrap();
        let e = c.check().unwrap_err();
        assert_eq!(e.path, "detectors[1]");
        assert!(e.message.contains("does not include"), "{}", e.message);
        let c: ResourceDetectionConfig = serde_yaml_ng::from_str("detectors: [nope]").unwrap();
        assert!(c.check().unwrap_err().message.contains("unknown detector"));
    }
}
