//! A differential of the tail sampler's own span encoding against prost: any request that
//! prost decodes goes through the sampler's buffer (encoded by our wire code, decoded again
//! when kept) and comes out with every span equal to prost's, resource and scope included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use otel_pipeline_core::{Batch, ComponentId, ComponentKind, ComponentTelemetry};
use otel_processors::config::from_yaml;
use otel_processors::tail_sampling::TailSamplingConfig;
use otel_processors::tail_sampling::internals::Engine;
use prost::Message;

fn spans(req: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = req
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |s| {
                    // Resource and scope travel with each span.
                    let mut key = rs.resource.clone().unwrap_or_default().encode_to_vec();
                    key.extend(ss.scope.clone().unwrap_or_default().encode_to_vec());
                    key.extend(s.encode_to_vec());
                    key
                })
            })
        })
        .collect();
    out.sort();
    out
}

fn valid_id(s: &Span) -> bool {
    s.trace_id.len() == 16 && s.trace_id.iter().any(|b| *b != 0)
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut req) = ExportTraceServiceRequest::decode(data) else {
        return;
    };
    // Spans without a valid trace id are dropped (counted) by design; compare the rest.
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(valid_id);
        }
    }
    let config: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 30s\npolicies: [{ name: all, type: always_sample }]",
    )
    .expect("config");
    let telemetry = ComponentTelemetry::detached(
        ComponentKind::Processor,
        ComponentId::new("tail_sampling"),
        "spans",
    );
    let mut core = Engine::new(config, telemetry).expect("core");
    let now = tokio::time::Instant::now();
    let part = core.prepare(Batch::new(req.clone()));
    core.ingest(&part, now);
    core.decide_all(now);
    let out = core.take_output().unwrap_or_default();
    assert_eq!(spans(&out), spans(&req));
});
