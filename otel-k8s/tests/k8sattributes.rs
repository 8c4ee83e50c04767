//! The `k8sattributes` processor with the real `kube` client against a local Kubernetes API
//! server that serves list and watch the way the API server does: `k8s-openapi` objects as
//! JSON, resourceVersions, watch events as JSON lines, a ReplicaSet for the on-demand
//! Deployment lookup, and a `410 Gone` in the middle of a watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use otel_k8s::{K8sAttributes, K8sAttributesConfig};
use otel_pipeline_core::DirectReceiver;
use otel_pipeline_core::config::from_yaml;
use otel_pipeline_core::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::testing::{InMemoryExporter, eventually, generate_traces};
use otel_pipeline_core::{Batch, ClientInfo, Pipeline, Telemetry};

mod common;
use common::ApiServer;

fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn pod(
    uid: &str,
    name: &str,
    node: &str,
    ips: &[&str],
    owner_ref: Option<OwnerReference>,
    labels: &[(&str, &str)],
    image: &str,
    cid: &str,
) -> Pod {
    let mut p = Pod::default();
    p.metadata.uid = Some(uid.into());
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("shop".into());
    p.metadata.owner_references = owner_ref.map(|o| vec![o]);
    p.metadata.annotations = Some(BTreeMap::from([(
        "ci.example/commit".to_string(),
        format!("{uid}-sha"),
    )]));
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    // What the real API server sends and a cache must not keep.
    p.metadata.managed_fields = Some(vec![Default::default()]);
    p.spec = Some(PodSpec {
        node_name: Some(node.into()),
        containers: vec![Container {
            name: "app".into(),
            image: Some(image.into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    p.status = Some(PodStatus {
        pod_ip: ips.first().map(|s| s.to_string()),
        pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            container_id: Some(format!("containerd://{cid}")),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

fn attr<'a>(r: &'a Resource, key: &str) -> Option<&'a str> {
    r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn batch_with(
    attrs: Vec<(&str, &str)>,
    peer: Option<&str>,
    seed: u64,
) -> Batch<otel_pipeline_core::Traces> {
    let mut data = generate_traces(1, 2, seed);
    data.resource_spans[0].resource = Some(Resource {
        attributes: attrs
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(v.into())),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    match peer {
        Some(ip) => Batch::with_client(
            data,
            Arc::new(ClientInfo {
                addr: Some(format!("{ip}:5000").parse().expect("addr")),
                metadata: vec![],
                auth: vec![],
            }),
        ),
        None => Batch::new(data),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_from_a_watched_api_server() {
    const PODS: &str = "/api/v1/pods";
    let api = ApiServer::start().await;
    let json = |p: Pod| serde_json::to_value(p).expect("pod json");
    api.put(
        PODS,
        json(pod(
            "u-web",
            "web-7d9-abc",
            "node-a",
            &["10.1.0.5", "fd00::5"],
            Some(owner("ReplicaSet", "web-7d9", "rs-1")),
            &[
                ("app.kubernetes.io/version", "1.4.2"),
                ("team", "payments"),
                ("app.kubernetes.io/name", "web"),
            ],
            "registry:5000/shop/web:1.4.2",
            "abc123",
        )),
    );
    api.put(
        PODS,
        json(pod(
            "u-db",
            "db-0",
            "node-a",
            &["10.1.0.6"],
            Some(owner("StatefulSet", "db", "ss-1")),
            &[],
            "postgres:16",
            "def456",
        )),
    );
    api.put(
        PODS,
        json(pod(
            "u-far",
            "far-away",
            "node-b",
            &["10.2.0.9"],
            None,
            &[],
            "busybox",
            "zzz",
        )),
    );
    let mut rs = ReplicaSet::default();
    rs.metadata.name = Some("web-7d9".into());
    rs.metadata.namespace = Some("shop".into());
    rs.metadata.uid = Some("rs-1".into());
    rs.metadata.owner_references = Some(vec![owner("Deployment", "web", "dep-1")]);
    api.single(
        "/apis/apps/v1/namespaces/shop/replicasets/web-7d9",
        serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": serde_json::to_value(&rs.metadata).expect("metadata")}),
    );
    api.put("/api/v1/nodes", serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "uid": "n-a", "labels": {"topology.kubernetes.io/zone": "eu-west-1b"}}}));
    api.put("/api/v1/nodes", serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b", "uid": "n-b", "labels": {"topology.kubernetes.io/zone": "eu-west-1c"}}}));
    api.put("/api/v1/namespaces", serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "uid": "ns-shop", "labels": {"cost-center": "cc-42"}}}));
    api.single("/api/v1/namespaces/kube-system", serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "kube-system", "uid": "cluster-7f3a"}}));
    let client = api.client();

    // The agent's section as operations teams write it, plus an association by UID.
    let config: K8sAttributesConfig = from_yaml(
        "processors.k8sattributes",
        r#"
auth_type: serviceAccount
filter:
  node: node-a
extract:
  metadata: [k8s.pod.name, k8s.pod.uid, k8s.deployment.name, k8s.namespace.name, k8s.node.name, k8s.statefulset.name, container.image.name, container.image.tag, service.name, service.version, k8s.cluster.uid]
  labels:
    - { tag_name: app.version, key: app.kubernetes.io/version, from: pod }
    - { tag_name: team, key: team, from: pod }
    - { tag_name: cloud.availability_zone, key: topology.kubernetes.io/zone, from: node }
    - { key_regex: "cost-(.*)", tag_name: "cost.$1", from: namespace }
  annotations:
    - { tag_name: git.commit, key: ci.example/commit, from: pod }
pod_association:
  - sources: [{ from: resource_attribute, name: k8s.pod.ip }]
  - sources: [{ from: resource_attribute, name: k8s.pod.uid }]
  - sources: [{ from: connection }]
deleted_pod_grace: 60s
hold_unknown_for: 400ms
"#,
    )
    .expect("config");
    let telemetry = Telemetry::new();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .processor(K8sAttributes::new(config).with_client(client))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let pods = || telemetry.sum("otelcol_processor_k8sattributes_pods", &[]);
    assert!(
        eventually(Duration::from_secs(10), || pods() == 2).await,
        "synced {} pods",
        pods()
    );
    assert!(
        eventually(Duration::from_secs(5), || running.health().is_ready()).await,
        "ready once pods, nodes and namespaces are synced"
    );
    let mut selectors = api.field_selectors();
    selectors.sort();
    assert_eq!(
        selectors,
        ["metadata.name=node-a", "spec.nodeName=node-a"],
        "an agent watches its node's pods, and its node only"
    );

    let last = || {
        exported
            .batches()
            .last()
            .and_then(|b| b.data().resource_spans[0].resource.clone())
            .expect("a batch")
    };
    // By the k8s.pod.ip resource attribute (the IPv6 one: dual-stack is indexed).
    sender
        .send_batch(batch_with(vec![("k8s.pod.ip", "fd00::5")], None, 1))
        .await
        .expect("sent");
    let r = last();
    assert_eq!(attr(&r, "k8s.pod.name"), Some("web-7d9-abc"));
    assert_eq!(
        attr(&r, "k8s.deployment.name"),
        Some("web"),
        "from the ReplicaSet's owner, looked up on demand"
    );
    assert_eq!(attr(&r, "k8s.namespace.name"), Some("shop"));
    assert_eq!(attr(&r, "k8s.node.name"), Some("node-a"));
    assert_eq!(attr(&r, "app.version"), Some("1.4.2"));
    assert_eq!(attr(&r, "team"), Some("payments"));
    assert_eq!(
        attr(&r, "container.image.name"),
        Some("registry:5000/shop/web")
    );
    assert_eq!(attr(&r, "container.image.tag"), Some("1.4.2"));
    assert_eq!(attr(&r, "service.name"), Some("web"));
    assert_eq!(attr(&r, "service.version"), Some("1.4.2"));
    assert_eq!(
        attr(&r, "cloud.availability_zone"),
        Some("eu-west-1b"),
        "a node label"
    );
    assert_eq!(
        attr(&r, "cost.center"),
        Some("cc-42"),
        "a namespace label by key_regex"
    );
    assert_eq!(attr(&r, "k8s.cluster.uid"), Some("cluster-7f3a"));
    assert_eq!(
        attr(&r, "git.commit"),
        Some("u-web-sha"),
        "a pod annotation"
    );
    // By UID, and by the connection's address.
    sender
        .send_batch(batch_with(vec![("k8s.pod.uid", "u-db")], None, 2))
        .await
        .expect("sent");
    assert_eq!(attr(&last(), "k8s.statefulset.name"), Some("db"));
    sender
        .send_batch(batch_with(vec![], Some("10.1.0.6"), 3))
        .await
        .expect("sent");
    assert_eq!(attr(&last(), "k8s.pod.name"), Some("db-0"));
    // A pod on another node is not in this agent's cache: its spans are held for a while
    // in case the pod is new, then pass on unenriched, counted.
    let before = exported.item_count();
    sender
        .send_batch(batch_with(vec![("k8s.pod.ip", "10.2.0.9")], None, 4))
        .await
        .expect("sent");
    assert_eq!(exported.item_count(), before, "held");
    assert!(
        eventually(Duration::from_secs(3), || exported.item_count()
            == before + 2)
        .await,
        "released"
    );
    assert_eq!(attr(&last(), "k8s.pod.name"), None);
    assert_eq!(
        telemetry.sum(
            "otelcol_processor_k8sattributes_released_spans",
            &[("result", "unenriched")]
        ),
        2
    );
    assert_eq!(
        telemetry.sum(
            "otelcol_processor_k8sattributes_lookups",
            &[("result", "miss")]
        ),
        1
    );
    // The start-up race: spans arrive before their pod; they are enriched once it appears.
    let before = exported.item_count();
    sender
        .send_batch(batch_with(vec![("k8s.pod.ip", "10.1.0.7")], None, 40))
        .await
        .expect("sent");
    api.put(
        PODS,
        json(pod(
            "u-new",
            "worker-5f6-new",
            "node-a",
            &["10.1.0.7"],
            None,
            &[],
            "worker:2",
            "jkl000",
        )),
    );
    assert!(
        eventually(Duration::from_secs(3), || exported.item_count()
            == before + 2)
        .await,
        "released"
    );
    assert_eq!(attr(&last(), "k8s.pod.name"), Some("worker-5f6-new"));
    assert_eq!(
        telemetry.sum(
            "otelcol_processor_k8sattributes_released_spans",
            &[("result", "enriched")]
        ),
        2
    );
    // The ReplicaSet was fetched once; the second lookup comes from the cache.
    sender
        .send_batch(batch_with(vec![("k8s.pod.ip", "10.1.0.5")], None, 5))
        .await
        .expect("sent");
    assert_eq!(attr(&last(), "k8s.deployment.name"), Some("web"));
    assert_eq!(
        telemetry.sum(
            "otelcol_processor_k8sattributes_replicaset_lookups",
            &[("result", "ok")]
        ),
        1
    );

    // web is deleted; a late span still enriches within the grace period.
    api.delete(PODS, "web-7d9-abc");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender
        .send_batch(batch_with(vec![("k8s.pod.ip", "10.1.0.5")], None, 6))
        .await
        .expect("sent");
    assert_eq!(
        attr(&last(), "k8s.pod.name"),
        Some("web-7d9-abc"),
        "late span after deletion"
    );
    // Its successor reuses the IP and is enriched as itself.
    api.put(
        PODS,
        json(pod(
            "u-web2",
            "web-7d9-xyz",
            "node-a",
            &["10.1.0.5"],
            Some(owner("ReplicaSet", "web-7d9", "rs-1")),
            &[("team", "payments")],
            "registry:5000/shop/web:1.4.3",
            "ghi789",
        )),
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let _ = futures_util::FutureExt::now_or_never(sender.send_batch(batch_with(
                vec![("k8s.pod.ip", "10.1.0.5")],
                None,
                7,
            )));
            exported
                .batches()
                .last()
                .and_then(|b| b.data().resource_spans[0].resource.clone())
                .is_some_and(|r| attr(&r, "k8s.pod.name") == Some("web-7d9-xyz"))
        })
        .await,
        "the new pod with the reused IP"
    );

    // The API server drops the watch: the watcher watches again, the cache is kept, and
    // later events still arrive.
    assert!(eventually(Duration::from_secs(5), || api.watches(PODS) == 1).await);
    api.drop_watches();
    assert!(
        eventually(Duration::from_secs(10), || api.watches(PODS) == 1).await,
        "watching again"
    );
    sender
        .send_batch(batch_with(vec![], Some("10.1.0.6"), 41))
        .await
        .expect("sent");
    assert_eq!(attr(&last(), "k8s.pod.name"), Some("db-0"), "cache kept");
    api.put(
        PODS,
        json(pod(
            "u-late",
            "late-0",
            "node-a",
            &["10.1.0.8"],
            None,
            &[],
            "late:1",
            "mno111",
        )),
    );
    assert!(
        eventually(Duration::from_secs(5), || pods() >= 4).await,
        "events after the reconnect: {}",
        pods()
    );

    // 410 Gone mid-watch: the watcher lists again and the cache stays whole.
    let lists_before = api.lists(PODS);
    api.gone(PODS);
    assert!(
        eventually(Duration::from_secs(15), || api.lists(PODS) > lists_before).await,
        "re-listed after 410"
    );
    assert!(
        eventually(Duration::from_secs(5), || telemetry
            .sum("otelcol_processor_k8sattributes_relists", &[])
            >= 2)
        .await
    );
    sender
        .send_batch(batch_with(vec![], Some("10.1.0.6"), 8))
        .await
        .expect("sent");
    assert_eq!(attr(&last(), "k8s.pod.name"), Some("db-0"));
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_sync_and_an_unreachable_api_keeps_trying() {
    // An API server that does not serve pods (403/404 to every list): never synced.
    let api = ApiServer::start().await;
    let config: K8sAttributesConfig =
        from_yaml("processors.k8sattributes", "hold_unknown_for: 0s").expect("config");
    let telemetry = Telemetry::new();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .processor(K8sAttributes::new(config).with_client(api.client()))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    assert!(
        eventually(Duration::from_secs(5), || telemetry
            .sum("otelcol_processor_k8sattributes_watch_restarts", &[])
            >= 1)
        .await,
        "watch failures counted"
    );
    assert!(!running.health().is_ready());
    assert_eq!(
        running.health().waiting_for(),
        ["k8sattributes: first sync of the pod cache"]
    );
    // Spans still pass, unenriched and counted.
    sender.send(generate_traces(1, 2, 1)).await.expect("sent");
    assert_eq!(exported.item_count(), 2);
    assert_eq!(
        telemetry.sum(
            "otelcol_processor_k8sattributes_lookups",
            &[("result", "miss")]
        ),
        1
    );
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// The shipped association order (`k8s.pod.ip` from the resource, then the connection):
/// spans that name a pod the cache has not seen yet, sent through a proxy pod, are held
/// for that pod, not labelled as the proxy. They are enriched when the pod appears (1.5 s
/// later), and pass on unenriched, counted, when it never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_named_but_not_yet_seen_is_a_miss_not_the_connecting_proxy() {
    const PODS: &str = "/api/v1/pods";
    let api = ApiServer::start().await;
    let json = |p: Pod| serde_json::to_value(p).expect("pod json");
    api.put(
        PODS,
        json(pod(
            "u-proxy",
            "envoy-proxy",
            "node-a",
            &["10.1.0.6"],
            None,
            &[],
            "envoy:1",
            "p01",
        )),
    );
    let config: K8sAttributesConfig = from_yaml(
        "processors.k8sattributes",
        r#"
extract:
  metadata: [k8s.pod.name]
pod_association:
  - sources: [{ from: resource_attribute, name: k8s.pod.ip }]
  - sources: [{ from: connection }]
hold_unknown_for: 3s
"#,
    )
    .expect("config");
    let telemetry = Telemetry::new();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .processor(K8sAttributes::new(config).with_client(api.client()))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    assert!(eventually(Duration::from_secs(10), || running.health().is_ready()).await);
    let names = || -> Vec<Option<String>> {
        exported
            .batches()
            .iter()
            .map(|b| {
                b.data().resource_spans[0]
                    .resource
                    .as_ref()
                    .and_then(|r| attr(r, "k8s.pod.name").map(str::to_string))
            })
            .collect()
    };
    // Only the connection: the proxy itself, as before.
    sender
        .send_batch(batch_with(vec![], Some("10.1.0.6"), 1))
        .await
        .expect("sent");
    assert_eq!(names(), [Some("envoy-proxy".to_string())]);
    // A pod IP the cache does not know yet, through the proxy: held, not the proxy's.
    sender
        .send_batch(batch_with(
            vec![("k8s.pod.ip", "10.1.0.9")],
            Some("10.1.0.6"),
            2,
        ))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(names().len(), 1, "held while its pod may still appear");
    api.put(
        PODS,
        json(pod(
            "u-late",
            "late-pod",
            "node-a",
            &["10.1.0.9"],
            None,
            &[],
            "app:1",
            "l01",
        )),
    );
    assert!(
        eventually(Duration::from_secs(4), || names().len() == 2).await,
        "released"
    );
    assert_eq!(names()[1].as_deref(), Some("late-pod"));
    // A pod that never appears: unenriched at the end of the hold, never the proxy.
    sender
        .send_batch(batch_with(
            vec![("k8s.pod.ip", "10.1.0.99")],
            Some("10.1.0.6"),
            3,
        ))
        .await
        .expect("sent");
    assert!(
        eventually(Duration::from_secs(5), || names().len() == 3).await,
        "released"
    );
    assert_eq!(names()[2], None);
    assert_eq!(
        telemetry.sum(
            "otelcol_processor_k8sattributes_released_spans",
            &[("result", "unenriched")]
        ),
        2
    );
    running
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// The byte path: a request still in its bytes (as receivers hand it on) comes out as the
/// decoded path would make it, resource by resource, on requests with several resources
/// (a known pod, an unknown one, attributes already set, no key, no resource at all,
/// other resource fields), with and without a connection to associate by; and it leaves
/// still in its bytes, its spans never decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_on_bytes_gives_what_the_decoded_path_gives() {
    use prost::Message;
    const PODS: &str = "/api/v1/pods";
    let api = ApiServer::start().await;
    let json = |p: Pod| serde_json::to_value(p).expect("pod json");
    api.put(
        PODS,
        json(pod(
            "u-web",
            "web-7d9-abc",
            "node-a",
            &["10.1.0.5"],
            Some(owner("StatefulSet", "web", "ss-9")),
            &[("team", "payments"), ("app.kubernetes.io/name", "web")],
            "registry:5000/shop/web:1.4.2",
            "abc123",
        )),
    );
    api.put(
        PODS,
        json(pod(
            "u-db",
            "db-0",
            "node-a",
            &["10.1.0.6"],
            Some(owner("StatefulSet", "db", "ss-1")),
            &[],
            "postgres:16",
            "def456",
        )),
    );
    let config: K8sAttributesConfig = from_yaml(
        "processors.k8sattributes",
        r#"
auth_type: serviceAccount
extract:
  metadata: [k8s.pod.name, k8s.pod.uid, k8s.namespace.name, k8s.node.name, k8s.statefulset.name, container.image.name, service.name]
  labels:
    - { tag_name: team, key: team, from: pod }
pod_association:
  - sources: [{ from: resource_attribute, name: k8s.pod.ip }]
  - sources: [{ from: connection }]
hold_unknown_for: 0s
"#,
    )
    .expect("config");
    let telemetry = Telemetry::new();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let running = Pipeline::traces()
        .telemetry(telemetry.clone())
        .receiver(receiver)
        .processor(K8sAttributes::new(config).with_client(api.client()))
        .exporter(exporter)
        .build()
        .expect("builds")
        .start()
        .await
        .expect("starts");
    let pods = || telemetry.sum("otelcol_processor_k8sattributes_pods", &[]);
    assert!(eventually(Duration::from_secs(10), || pods() == 2).await);
    let string = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let rounds = 24u64;
    for seed in 0..rounds {
        let mut req = generate_traces(2, 2, seed);
        let template = req.resource_spans[0].clone();
        req.resource_spans.clear();
        let resources = [
            Some(Resource {
                attributes: vec![string("k8s.pod.ip", "10.1.0.5"), string("env", "prod")],
                dropped_attributes_count: (seed % 3) as u32,
                ..Default::default()
            }),
            Some(Resource {
                attributes: vec![string("k8s.pod.ip", "10.9.9.9")],
                ..Default::default()
            }),
            None,
            Some(Resource {
                attributes: vec![
                    string("k8s.pod.ip", "10.1.0.6"),
                    string("k8s.pod.name", "preset"),
                ],
                ..Default::default()
            }),
            Some(Resource::default()),
        ];
        for (i, r) in resources.into_iter().enumerate() {
            if (seed as usize + i) % 4 == 3 {
                continue;
            }
            let mut rs = template.clone();
            rs.resource = r;
            req.resource_spans.push(rs);
        }
        let client = (seed % 2 == 1).then(|| {
            Arc::new(ClientInfo {
                addr: Some("10.1.0.6:5000".parse().expect("addr")),
                metadata: vec![],
                auth: vec![],
            })
        });
        let decoded = match &client {
            Some(c) => Batch::with_client(req.clone(), Arc::clone(c)),
            None => Batch::new(req.clone()),
        };
        let mut encoded = Batch::from_encoded(req.encode_to_vec().into()).expect("a valid request");
        if let Some(c) = &client {
            encoded = encoded.with_client_info(Arc::clone(c));
        }
        sender.send_batch(decoded).await.expect("accepted");
        sender.send_batch(encoded).await.expect("accepted");
    }
    assert!(
        eventually(Duration::from_secs(5), || exported.batches().len()
            == 2 * rounds as usize)
        .await
    );
    let batches = exported.batches();
    let normal =
        |mut r: otel_pipeline_core::proto::collector::trace::v1::ExportTraceServiceRequest| {
            for rs in &mut r.resource_spans {
                rs.resource.get_or_insert_with(Resource::default);
            }
            r
        };
    let mut enriched = 0;
    for pair in batches.chunks(2) {
        assert!(
            pair[1].encoded().is_some(),
            "the byte path keeps the request in its bytes"
        );
        let (a, b) = (
            normal(pair[0].data().clone()),
            normal(pair[1].data().clone()),
        );
        assert_eq!(a, b, "the byte path gives what the decoded path gives");
        enriched += a
            .resource_spans
            .iter()
            .filter(|rs| {
                rs.resource
                    .as_ref()
                    .is_some_and(|r| attr(r, "team") == Some("payments"))
            })
            .count();
    }
    assert!(enriched > 0, "pods were found and their attributes added");
    running
        .shutdown(Duration::from_secs(2))
        .await
        .expect("stops");
}
