//! `k8sattributes` on the agent path, side by side in one run: a request as the OTLP
//! receiver hands it on (its bytes) goes through the processor (passthrough mode: the
//! connection's pod IP added to every resource, as agents run it) to an exporter that
//! takes the request's bytes, as the OTLP exporter does.
//! - `k8s_enrich/decoded/1000_spans`: the request decoded first (what a stage that works
//!   on decoded spans costs: decode, enrich, encode again to send);
//! - `k8s_enrich/bytes/1000_spans`: the request left in its bytes: each resource decoded
//!   alone, the attribute appended to it, spans copied.
//!
//! `cargo bench --bench k8s_enrich`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use otel_pipeline::k8s::{K8sAttributes, K8sAttributesConfig};
use otel_pipeline::processors::config::from_yaml;
use otel_pipeline::testing::generate_traces;
use otel_pipeline::{
    Batch, BuildError, ClientInfo, ComponentContext, ComponentId, ConsumeError, Consumer,
    DirectReceiver, Exporter, Pipeline, Traces,
};
use prost::Message;

/// Takes each request's bytes, as an OTLP exporter does before it sends.
struct Bytes;

struct BytesConsumer;

impl Consumer<Traces> for BytesConsumer {
    async fn consume(&self, batch: Batch<Traces>) -> Result<(), ConsumeError<Traces>> {
        std::hint::black_box(batch.to_bytes());
        Ok(())
    }
}

impl Exporter<Traces> for Bytes {
    type Consumer = BytesConsumer;
    fn id(&self) -> ComponentId {
        ComponentId::new("bytes")
    }
    fn build(self, _ctx: &mut ComponentContext<'_>) -> Result<BytesConsumer, BuildError> {
        Ok(BytesConsumer)
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config: K8sAttributesConfig =
        from_yaml("processors.k8sattributes", "passthrough: true\n").expect("config");
    let (receiver, sender) = DirectReceiver::<Traces>::new();
    let running = rt.block_on(async {
        Pipeline::traces()
            .receiver(receiver)
            .processor(K8sAttributes::new(config))
            .exporter(Bytes)
            .build()
            .expect("builds")
            .start()
            .await
            .expect("starts")
    });
    // 1 000 spans in 10 resources, as an agent's batch of several pods' requests.
    let mut req = generate_traces(50, 20, 7);
    let template = req.resource_spans[0].clone();
    req.resource_spans = (0..10)
        .map(|i| {
            let mut rs = template.clone();
            rs.scope_spans[0].spans =
                template.scope_spans[0].spans[i * 100..(i + 1) * 100].to_vec();
            rs
        })
        .collect();
    let body = bytes::Bytes::from(req.encode_to_vec());
    let client = Arc::new(ClientInfo {
        addr: Some("10.1.0.5:40000".parse().expect("addr")),
        metadata: vec![],
        auth: vec![],
    });
    let mut g = c.benchmark_group("k8s_enrich");
    g.throughput(Throughput::Elements(1000));
    for (name, decode) in [("decoded", true), ("bytes", false)] {
        g.bench_function(format!("{name}/1000_spans"), |b| {
            b.iter_batched(
                || {
                    Batch::<Traces>::from_encoded(body.clone())
                        .expect("valid")
                        .with_client_info(Arc::clone(&client))
                },
                |mut batch| {
                    if decode {
                        batch.data_mut();
                    }
                    rt.block_on(sender.send_batch(batch)).expect("accepted");
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    rt.block_on(running.shutdown(Duration::from_secs(5)))
        .expect("stops");
    c.final_summary();
}
