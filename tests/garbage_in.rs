//! Garbage in, no panic out: every parser of outside data gets random bytes and mutations
//! of valid input. (The stable toolchain here has no `cargo fuzz`; this runs in every
//! `cargo test` instead, bounded and deterministic.)

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use otel_pipeline::processors::condition::Condition;
use otel_pipeline::propagation::CompositePropagator;
use otel_pipeline::propagation::b3::parse_single;
use otel_pipeline::propagation::baggage::parse_baggage;
use otel_pipeline::propagation::jaeger::parse_uber_trace_id;
use otel_pipeline::propagation::w3c::{parse_traceparent, parse_tracestate};
use otel_pipeline::testing::SplitMix64;

const ROUNDS: usize = 20_000;

const SEEDS: &[&str] = &[
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,a@b=c",
    "userId=alice,serverNode=DF%2028;p=1,isProduction=false",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
    "6e0c63257de34c92%3Abf3bb9c1e4ba9d3e%3A0%3A3",
    r#"attributes["http.route"] == "/healthz" and not IsMatch(name, "^GET") or (kind >= 2)"#,
];

/// A random string: printable ASCII, the syntax's own characters, and some UTF-8.
fn garbage(rng: &mut SplitMix64) -> String {
    const ALPHABET: &[char] = &[
        '-', '=', ',', ';', '%', '@', ':', '"', '(', ')', '[', ']', ' ', '\t', '0', 'f', 'F', 'z',
        '.', '\\', 'é', '☃', '\u{0}',
    ];
    let len = rng.below(80) as usize;
    (0..len)
        .map(|_| {
            if rng.below(2) == 0 {
                ALPHABET[rng.below(ALPHABET.len() as u64) as usize]
            } else {
                char::from(32 + rng.below(95) as u8)
            }
        })
        .collect()
}

/// A valid seed with a few characters replaced, inserted or removed.
fn mutate(rng: &mut SplitMix64, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() as u64 + 1) as usize;
        match rng.below(3) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => chars.insert(at, char::from(32 + rng.below(95) as u8)),
            _ if at < chars.len() => chars[at] = char::from(32 + rng.below(95) as u8),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

#[test]
fn text_parsers_never_panic() {
    let mut rng = SplitMix64::new(99);
    let composite = CompositePropagator::all_formats();
    for i in 0..ROUNDS {
        let input = if i % 2 == 0 {
            garbage(&mut rng)
        } else {
            mutate(&mut rng, SEEDS[i % SEEDS.len()])
        };
        let _ = parse_traceparent(&input);
        let _ = parse_tracestate(&[&input, &input]);
        let _ = parse_baggage(&[&input]);
        let _ = parse_single(&input);
        let _ = parse_uber_trace_id(&input);
        let _ = Condition::parse(&input);
        let mut headers = HashMap::new();
        for key in [
            "traceparent",
            "tracestate",
            "baggage",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-sampled",
            "uber-trace-id",
            "uberctx-k",
        ] {
            headers.insert(key.to_string(), input.clone());
        }
        let cx = composite.extract(&headers);
        let mut out = HashMap::new();
        composite.inject_context(&cx, &mut out);
    }
}

#[test]
fn protobuf_decoding_of_garbage_never_panics() {
    use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let valid = otel_pipeline::testing::generate_traces(2, 3, 1).encode_to_vec();
    let mut rng = SplitMix64::new(7);
    for i in 0..ROUNDS / 4 {
        let mut bytes = valid.clone();
        if i % 2 == 0 {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
        }
        for _ in 0..rng.below(8) {
            let at = rng.below(bytes.len().max(1) as u64) as usize;
            if at < bytes.len() {
                bytes[at] = rng.next_u64() as u8;
            }
        }
        if let Ok(req) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
            // Whatever decodes goes through the tail sampler's wire reader too.
            let _ = <otel_pipeline::Traces as otel_pipeline::Signal>::item_count(&req);
            let mut core = otel_pipeline::processors::tail_sampling::internals::Engine::new(
                otel_pipeline::processors::config::from_yaml(
                    "tail_sampling",
                    "policies: [{ name: s, type: string_attribute, string_attribute: { key: http.route, values: [x] } }, { name: t, type: trace_state, trace_state: { key: a, values: [b] } }]",
                )
                .expect("config"),
                otel_pipeline::ComponentTelemetry::detached(
                    otel_pipeline::ComponentKind::Processor,
                    otel_pipeline::ComponentId::new("tail_sampling"),
                    "spans",
                ),
            )
            .expect("core");
            let now = tokio::time::Instant::now();
            let spans = core.prepare(otel_pipeline::Batch::<otel_pipeline::Traces>::new(req));
            core.ingest(&spans, now);
            core.decide_all(now);
            let _ = core.take_output();
        }
    }
}
