//! `resourcedetection` against loopback servers that answer as each provider's metadata
//! service documents it (AWS IMDSv2, the ECS task metadata endpoint v4, the GCE metadata
//! server, Azure IMDS, the Docker API), and one that never answers: detection never holds
//! the pipeline's start past its timeout.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otel_pipeline_core::proto::common::v1::any_value::Value;
use otel_pipeline_core::testing::{InMemoryExporter, generate_traces};
use otel_pipeline_core::{DirectReceiver, Pipeline};
use otel_processors::resourcedetection::{ResourceDetection, ResourceDetectionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A metadata service: answers `(method, path)` with the body `route` gives, after
/// checking that every GET carries `required` (a header, lowercase, and its value);
/// `silent` never answers.
async fn metadata_server(
    route: fn(&str, &str) -> Option<String>,
    required: Option<(&'static str, &'static str)>,
    silent: bool,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if silent {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let text = String::from_utf8_lossy(&buf).to_lowercase();
                let mut line = text.lines().next().unwrap_or_default().split(' ');
                let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                // IMDSv2: the token request is the one request without the token.
                let allowed = method == "put"
                    || required.is_none_or(|(k, v)| {
                        text.lines()
                            .any(|l| l.strip_prefix(&format!("{k}: ")) == Some(&v.to_lowercase()))
                    });
                let (status, body) = match route(&method.to_uppercase(), path) {
                    Some(b) if allowed => ("200 OK", b),
                    Some(_) => ("401 Unauthorized", String::new()),
                    None => ("404 Not Found", String::new()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

async fn detected(yaml: &str) -> (Vec<(String, String)>, Duration) {
    let config: ResourceDetectionConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let (receiver, sender) = DirectReceiver::new();
    let (exporter, exported) = InMemoryExporter::new();
    let started = Instant::now();
    let running = Pipeline::traces()
        .receiver(receiver)
        .processor(ResourceDetection::new(config))
        .exporter(exporter)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let took = started.elapsed();
    sender.send(generate_traces(1, 1, 1)).await.unwrap();
    let batches = exported.batches();
    let attrs = batches[0].data().resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (a.key.clone(), v)
        })
        .collect();
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    (attrs, took)
}

fn get<'a>(attrs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cloud_detector_reads_its_metadata_service() {
    // AWS EC2, IMDSv2: a token first, then the identity document and the host name.
    let ec2 = metadata_server(
        |m, p| match (m, p) {
            ("PUT", "/latest/api/token") => Some("t0ken".into()),
            ("GET", "/latest/dynamic/instance-identity/document") => Some(
                r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b","imageId":"ami-5fb8c835","instanceId":"i-0123456789abcdef0","instanceType":"m5.large","region":"eu-west-1"}"#.into(),
            ),
            ("GET", "/latest/meta-data/hostname") => Some("ip-10-0-0-5.eu-west-1.compute.internal".into()),
            _ => None,
        },
        Some(("x-aws-ec2-metadata-token", "t0ken")),
        false,
    )
    .await;
    let (a, _) = detected(&format!(
        "detectors: [ec2]\nec2: {{endpoint: 'http://{ec2}'}}"
    ))
    .await;
    assert_eq!(get(&a, "cloud.provider"), Some("aws"));
    assert_eq!(get(&a, "cloud.platform"), Some("aws_ec2"));
    assert_eq!(get(&a, "cloud.region"), Some("eu-west-1"));
    assert_eq!(get(&a, "host.id"), Some("i-0123456789abcdef0"));
    assert_eq!(get(&a, "host.type"), Some("m5.large"));
    assert_eq!(
        get(&a, "service.name"),
        Some("orders"),
        "the span's own stay"
    );

    // GCE: every request needs `Metadata-Flavor: Google`.
    let gcp = metadata_server(
        |_, p| match p {
            "/computemetadata/v1/project/project-id" => Some("shop-prod".into()),
            "/computemetadata/v1/instance/zone" => Some("projects/123/zones/us-central1-a".into()),
            "/computemetadata/v1/instance/id" => Some("4520031799277581759".into()),
            "/computemetadata/v1/instance/name" => Some("gke-node-1".into()),
            "/computemetadata/v1/instance/machine-type" => {
                Some("projects/123/machineTypes/e2-standard-4".into())
            }
            _ => None,
        },
        Some(("metadata-flavor", "google")),
        false,
    )
    .await;
    let (a, _) = detected(&format!(
        "detectors: [gcp]\ngcp: {{endpoint: 'http://{gcp}'}}"
    ))
    .await;
    assert_eq!(get(&a, "cloud.provider"), Some("gcp"));
    assert_eq!(get(&a, "cloud.account.id"), Some("shop-prod"));
    assert_eq!(get(&a, "cloud.region"), Some("us-central1"));
    assert_eq!(get(&a, "cloud.availability_zone"), Some("us-central1-a"));
    assert_eq!(get(&a, "host.type"), Some("e2-standard-4"));

    // Azure IMDS: `Metadata: true`.
    let azure = metadata_server(
        |_, p| {
            p.starts_with("/metadata/instance/compute").then(|| {
                r#"{"location":"westeurope","name":"vm-1","vmId":"13f56399-bd52-4150-9748-7190aae1ff21","vmSize":"Standard_D2s_v3","subscriptionId":"8d10da13-8125-4ba9-a717-bf7490507b3d","resourceGroupName":"rg-shop","vmScaleSetName":"","osType":"Linux"}"#.into()
            })
        },
        Some(("metadata", "true")),
        false,
    )
    .await;
    let (a, _) = detected(&format!(
        "detectors: [azure]\nazure: {{endpoint: 'http://{azure}'}}"
    ))
    .await;
    assert_eq!(get(&a, "cloud.platform"), Some("azure_vm"));
    assert_eq!(get(&a, "cloud.region"), Some("westeurope"));
    assert_eq!(get(&a, "azure.resourcegroup.name"), Some("rg-shop"));
    assert_eq!(
        get(&a, "azure.vm.scaleset.name"),
        None,
        "empty values are not added"
    );

    // ECS task metadata v4.
    let ecs = metadata_server(
        |_, p| match p {
            "/v4/abc/task" => Some(
                r#"{"Cluster":"shop","TaskARN":"arn:aws:ecs:us-west-2:111122223333:task/shop/158d1c8083dd49d6b527399fd6414f5c","Family":"checkout","Revision":"7","AvailabilityZone":"us-west-2a","LaunchType":"FARGATE"}"#.into(),
            ),
            "/v4/abc" => Some(
                r#"{"DockerId":"cd189a933e5849daa93386466019ab50-2495160603","Name":"checkout","ContainerARN":"arn:aws:ecs:us-west-2:111122223333:container/05966557-f16c-49cb-9352-24b3a0dcd0e1"}"#.into(),
            ),
            _ => None,
        },
        None,
        false,
    )
    .await;
    let (a, _) = detected(&format!(
        "detectors: [ecs]\necs: {{endpoint: 'http://{ecs}/v4/abc'}}"
    ))
    .await;
    assert_eq!(get(&a, "cloud.platform"), Some("aws_ecs"));
    assert_eq!(get(&a, "cloud.account.id"), Some("111122223333"));
    assert_eq!(
        get(&a, "aws.ecs.cluster.arn"),
        Some("arn:aws:ecs:us-west-2:111122223333:cluster/shop")
    );
    assert_eq!(get(&a, "aws.ecs.launchtype"), Some("fargate"));
    assert_eq!(get(&a, "container.name"), Some("checkout"));

    // Docker's /info.
    let docker = metadata_server(
        |_, p| (p == "/info").then(|| r#"{"Name":"docker-host-1","OSType":"linux"}"#.into()),
        None,
        false,
    )
    .await;
    let (a, _) = detected(&format!(
        "detectors: [docker]\ndocker: {{endpoint: 'http://{docker}'}}"
    ))
    .await;
    assert_eq!(get(&a, "host.name"), Some("docker-host-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_never_holds_start_past_the_timeout_and_order_decides() {
    let silent = metadata_server(|_, _| None, None, true).await;
    let yaml = format!(
        "detectors: [ec2, gcp, system]\ntimeout: 300ms\nec2: {{endpoint: 'http://{silent}'}}\ngcp: {{endpoint: 'http://{silent}'}}"
    );
    let (a, took) = detected(&yaml).await;
    assert!(took < Duration::from_secs(3), "start took {took:?}");
    assert_eq!(get(&a, "cloud.provider"), None);
    assert!(
        get(&a, "host.name").is_some(),
        "the system detector still ran"
    );
    // The Collector's other detectors are named.
    let config: ResourceDetectionConfig = serde_yaml_ng::from_str("detectors: [eks]").unwrap();
    let (exporter, _) = InMemoryExporter::new();
    let err = Pipeline::traces()
        .processor(ResourceDetection::new(config))
        .exporter(exporter)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("eks"), "{err}");
}
