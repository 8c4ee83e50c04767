//! Shared span generation for the processor benches.

use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::proto::common::v1::{AnyValue, KeyValue, any_value::Value};
use otel_pipeline::testing::{SplitMix64, generate_traces};

/// `n` spans with 20 attributes each, like instrumented HTTP/DB spans; one in twenty is a
/// health check, and some carry the values the gateway's redaction looks for.
pub(crate) fn spans_with_20_attributes(n: usize) -> ExportTraceServiceRequest {
    spans_with_20_attributes_seeded(n, 7)
}

/// [`spans_with_20_attributes`] with its varying values (URL ids, tenants, cart sizes)
/// drawn from `seed`.
#[allow(dead_code)] // Not every bench that shares this module uses it.
pub(crate) fn spans_with_20_attributes_seeded(n: usize, seed: u64) -> ExportTraceServiceRequest {
    let mut req = generate_traces(n / 10, 10, 42 ^ seed);
    let mut rng = SplitMix64::new(seed);
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    for (i, span) in req.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        let route = if i % 20 == 0 {
            "/healthz"
        } else {
            "/api/orders/{id}"
        };
        span.attributes = vec![
            kv("http.request.method", Value::StringValue("GET".into())),
            kv("http.route", Value::StringValue(route.into())),
            kv("http.response.status_code", Value::IntValue(200)),
            kv(
                "url.full",
                Value::StringValue(format!(
                    "https://shop.example/api/orders/{}",
                    rng.below(100_000)
                )),
            ),
            kv(
                "server.address",
                Value::StringValue("orders.svc.cluster.local".into()),
            ),
            kv("server.port", Value::IntValue(8080)),
            kv("client.address", Value::StringValue("10.1.2.3".into())),
            kv("network.protocol.version", Value::StringValue("1.1".into())),
            kv(
                "user_agent.original",
                Value::StringValue("Mozilla/5.0 (X11; Linux x86_64)".into()),
            ),
            kv(
                "http.request.header.authorization",
                Value::StringValue("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".into()),
            ),
            kv(
                "http.request.header.cookie",
                Value::StringValue("session=abc123; theme=dark".into()),
            ),
            kv("db.system", Value::StringValue("postgresql".into())),
            kv(
                "db.statement",
                Value::StringValue("SELECT * FROM orders WHERE id = $1".into()),
            ),
            kv("db.name", Value::StringValue("orders".into())),
            kv(
                "app.tenant",
                Value::StringValue(format!("tenant-{}", rng.below(50))),
            ),
            kv(
                "app.customer.email",
                Value::StringValue(if i % 7 == 0 {
                    "jane@example.com".into()
                } else {
                    "n/a".into()
                }),
            ),
            kv("app.cart.items", Value::IntValue(rng.below(10) as i64)),
            kv("app.cart.total", Value::DoubleValue(12.5)),
            kv("app.feature.flag", Value::BoolValue(true)),
            kv("thread.id", Value::IntValue(17)),
        ];
    }
    req
}
