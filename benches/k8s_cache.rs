//! The pod metadata cache with 100 000 synthetic pods, as in a large cluster's gateway (an
//! agent holds only its node's): heap bytes per cached pod, measured with a counting
//! allocator, and lookup by IP (criterion).
//!
//! `cargo bench --bench k8s_cache`

use std::alloc::System;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use otel_pipeline::k8s::{Keep, PodMetadataCache};
use otel_pipeline::testing::SplitMix64;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PODS: usize = 100_000;

/// A pod as deployments make them: four labels, two annotations, an owner, two containers,
/// a start time.
fn pod(i: usize, rng: &mut SplitMix64) -> Pod {
    // The pods of one Deployment (2 000 of them, 50 pods each) share labels and images.
    let j = i % 2000;
    let app = format!("svc-{j}");
    let rs = format!("{app}-{:x}", 0x5f6d8 + i % 2000);
    let mut p = Pod::default();
    p.metadata.name = Some(format!("{rs}-{:05x}", rng.below(1 << 20)));
    p.metadata.namespace = Some(format!("team-{}", j % 50));
    p.metadata.uid = Some(format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rng.next_u64() as u32,
        rng.below(65536),
        rng.below(4096),
        rng.below(4096),
        rng.next_u64() >> 16
    ));
    p.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), app.clone()),
        (
            "app.kubernetes.io/version".to_string(),
            format!("1.{}.{}", j % 7, j % 13),
        ),
        ("team".to_string(), format!("team-{}", j % 50)),
        (
            "pod-template-hash".to_string(),
            format!("{:x}", 0x5f6d8 + i % 2000),
        ),
    ]));
    p.metadata.annotations = Some(BTreeMap::from([
        (
            "kubectl.kubernetes.io/restartedAt".to_string(),
            "2026-11-01T10:00:00Z".to_string(),
        ),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
    ]));
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs,
        uid: format!("rs-{}", i % 2000),
        controller: Some(true),
        ..Default::default()
    }]);
    p.spec = Some(PodSpec {
        node_name: Some(format!(
            "ip-10-0-{}-{}.eu-west-1.compute.internal",
            i % 500 / 250,
            i % 250
        )),
        containers: vec![
            Container {
                name: "app".into(),
                image: Some(format!("registry.example/{app}:1.{}.{}", j % 7, j % 13)),
                ..Default::default()
            },
            Container {
                name: "envoy".into(),
                image: Some("envoyproxy/envoy:v1.31.2".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let ip = format!("10.{}.{}.{}", 1 + i / 65536, i / 256 % 256, i % 256);
    p.status = Some(PodStatus {
        pod_ip: Some(ip.clone()),
        start_time: Some(Time(
            Timestamp::from_second(1_795_000_000 + i as i64).expect("a valid time"),
        )),
        pod_ips: Some(vec![PodIP { ip }]),
        container_statuses: Some(vec![
            ContainerStatus {
                name: "app".into(),
                container_id: Some(format!(
                    "containerd://{:016x}{:016x}",
                    rng.next_u64(),
                    rng.next_u64()
                )),
                ..Default::default()
            },
            ContainerStatus {
                name: "envoy".into(),
                container_id: Some(format!(
                    "containerd://{:016x}{:016x}",
                    rng.next_u64(),
                    rng.next_u64()
                )),
                ..Default::default()
            },
        ]),
        ..Default::default()
    });
    p
}

/// The default extraction's labels (what the agent keeps of each pod).
fn keep() -> Keep {
    Keep {
        labels: [
            "app.kubernetes.io/name",
            "app.kubernetes.io/version",
            "team",
        ]
        .map(String::from)
        .into(),
        annotations: ["resource.opentelemetry.io/service.name"]
            .map(String::from)
            .into(),
        ..Keep::default()
    }
}

fn main() {
    let mut rng = SplitMix64::new(7);
    let pods: Vec<Pod> = (0..PODS).map(|i| pod(i, &mut rng)).collect();
    let cache = PodMetadataCache::new(keep(), Duration::from_secs(120));
    // Everything the cache allocates while taking the pods in, and still holds after.
    let region = Region::new(GLOBAL);
    for p in &pods {
        cache.apply(p);
    }
    let stats = region.change();
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let json: usize = pods.iter().map(serde_json_len).sum::<usize>() / PODS;
    println!(
        "k8s_cache memory: {} pods, {:.0} bytes of heap per cached pod (the API's JSON for one: {json} bytes)",
        cache.len(),
        held as f64 / PODS as f64
    );
    let ips: Vec<IpAddr> = (0..4096)
        .map(|_| {
            let i = rng.below(PODS as u64) as usize;
            format!("10.{}.{}.{}", 1 + i / 65536, i / 256 % 256, i % 256)
                .parse()
                .expect("ip")
        })
        .collect();
    drop(pods);

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("k8s_cache");
    g.throughput(Throughput::Elements(ips.len() as u64));
    g.bench_function("lookup_by_ip_100k_pods", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for ip in &ips {
                found += usize::from(cache.by_ip(black_box(*ip)).is_some());
            }
            found
        })
    });
    g.finish();
    c.final_summary();
}

fn serde_json_len(p: &Pod) -> usize {
    serde_json::to_vec(p).map(|v| v.len()).unwrap_or(0)
}
