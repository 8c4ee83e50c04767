//! Drives `examples/propagation_service.rs` the way the W3C trace-context conformance
//! harness does: a real HTTP server on loopback receives the service's callbacks, and each
//! case checks the `traceparent`/`tracestate` the service sent on.
//!
//! The example binary is built by `cargo test` (which builds examples) before tests run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

struct Service {
    child: Child,
    url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_service() -> Service {
    let exe = std::env::current_exe().expect("test path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("propagation_service"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (it builds examples) or `cargo build --example propagation_service`",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Service { child, url }
}

type Headers = Vec<(String, String)>;

/// The harness's callback server: records the headers of every callback.
async fn start_harness() -> (String, mpsc::UnboundedReceiver<(String, Headers)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let headers: Headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let _ = tx.send((req.uri().path().to_string(), headers));
                    async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

struct Harness {
    service: Service,
    callback_base: String,
    callbacks: mpsc::UnboundedReceiver<(String, Headers)>,
}

impl Harness {
    async fn new() -> Self {
        let service = start_service();
        let (callback_base, callbacks) = start_harness().await;
        Self {
            service,
            callback_base,
            callbacks,
        }
    }

    /// Send `headers` to the service, asking for `count` callbacks; return their headers.
    async fn request(&mut self, headers: &[(&str, &str)], count: usize) -> Vec<Headers> {
        let calls: Vec<serde_json::Value> = (0..count)
            .map(|i| serde_json::json!({"url": format!("{}/{i}", self.callback_base), "arguments": []}))
            .collect();
        let body = serde_json::to_vec(&calls).expect("json");
        let uri: http::Uri = self.service.url.parse().expect("service url");
        let authority = uri.authority().expect("authority").clone();
        let stream = TcpStream::connect(authority.as_str())
            .await
            .expect("connect to service");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::post("/test")
            .header("host", authority.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        for (k, v) in headers {
            req.headers_mut().append(
                http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("service answered in time")
            .expect("response");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
        let mut got = Vec::new();
        for _ in 0..count {
            let (_, h) = tokio::time::timeout(Duration::from_secs(5), self.callbacks.recv())
                .await
                .expect("callback arrived")
                .expect("harness running");
            got.push(h);
        }
        got
    }

    async fn one(&mut self, headers: &[(&str, &str)]) -> (Traceparent, Option<String>) {
        let h = self.request(headers, 1).await.remove(0);
        let tps: Vec<&String> = h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(tps.len(), 1, "exactly one traceparent: {h:?}");
        let ts: Vec<&String> = h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("tracestate"))
            .map(|(_, v)| v)
            .collect();
        assert!(ts.len() <= 1);
        (
            Traceparent::parse(tps[0]),
            ts.first().map(|s| s.to_string()),
        )
    }
}

#[derive(Debug)]
struct Traceparent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

impl Traceparent {
    fn parse(v: &str) -> Self {
        let parts: Vec<&str> = v.split('-').collect();
        assert_eq!(parts.len(), 4, "{v}");
        assert_eq!(parts[0], "00", "always re-emitted as version 00: {v}");
        assert!(
            parts[1].len() == 32 && parts[2].len() == 16 && parts[3].len() == 2,
            "{v}"
        );
        assert!(
            v.bytes()
                .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{v}"
        );
        Self {
            trace_id: parts[1].into(),
            parent_id: parts[2].into(),
            flags: parts[3].into(),
        }
    }
}

const TRACE: &str = "12345678901234567890123456789012";
const TP: &str = "00-12345678901234567890123456789012-1234567890123456-01";
const TP_UNSAMPLED: &str = "00-12345678901234567890123456789012-1234567890123456-00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_passes_the_trace_context_cases() {
    let mut h = Harness::new().await;

    // Missing headers: a new valid trace.
    let (tp, _) = h.one(&[]).await;
    assert_ne!(tp.trace_id, TRACE);

    // Valid: same trace, new parent id; header names in any case.
    for name in ["traceparent", "TraceParent", "TRACEPARENT"] {
        let (tp, ts) = h.one(&[(name, TP)]).await;
        assert_eq!(tp.trace_id, TRACE);
        assert_ne!(tp.parent_id, "1234567890123456");
        assert_eq!(ts, None, "no empty tracestate");
    }

    // Optional whitespace.
    for v in [
        " 00-12345678901234567890123456789012-1234567890123456-01",
        "00-12345678901234567890123456789012-1234567890123456-01\t",
    ] {
        assert_eq!(h.one(&[("traceparent", v)]).await.0.trace_id, TRACE);
    }

    // Future version is parsed; trailing data on 00 and bad versions restart the trace.
    assert_eq!(
        h.one(&[(
            "traceparent",
            "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like"
        )])
        .await
        .0
        .trace_id,
        TRACE
    );
    for bad in [
        "00-12345678901234567890123456789012-1234567890123456-01.",
        "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
        "ff-12345678901234567890123456789012-1234567890123456-01",
        "00-00000000000000000000000000000000-1234567890123456-01",
        "00-12345678901234567890123456789012-0000000000000000-01",
        "00-ABCDEF78901234567890123456789012-1234567890123456-01",
        "00-12345678901234567890123456789012-1234567890123456-001",
    ] {
        assert_ne!(
            h.one(&[("traceparent", bad)]).await.0.trace_id,
            TRACE,
            "{bad}"
        );
    }

    // Two different traceparent headers: restart.
    let (tp, _) = h
        .one(&[
            (
                "traceparent",
                "00-12345678901234567890123456789011-1234567890123456-01",
            ),
            (
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-01",
            ),
        ])
        .await;
    assert!(!tp.trace_id.starts_with("123456789012345678901234567890"));

    // Tracestate lines combine in order.
    let (_, ts) = h
        .one(&[
            ("traceparent", TP_UNSAMPLED),
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", "baz=3"),
        ])
        .await;
    assert_eq!(ts.as_deref(), Some("foo=1,bar=2,rojo=1,congo=2,baz=3"));

    // Invalid tracestate is dropped whole; the traceparent is kept ("Key", "Value";
    // test.py's test_tracestate_key_illegal_characters, _value_illegal_characters).
    for bad in [
        "foo =1",
        "FOO=1",
        "foo.bar=1",
        "@foo=1,bar=2",
        "foo=bar=baz",
        "foo=,bar=3",
    ] {
        let (tp, ts) = h
            .one(&[("traceparent", TP_UNSAMPLED), ("tracestate", bad)])
            .await;
        assert_eq!(tp.trace_id, TRACE);
        assert_eq!(ts, None, "{bad}");
    }

    // 32 members pass, 33 are dropped.
    let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
    let (_, ts) = h
        .one(&[
            ("traceparent", TP_UNSAMPLED),
            ("tracestate", &members[..32].join(",")),
        ])
        .await;
    assert_eq!(ts.map(|s| s.split(',').count()), Some(32));
    let (_, ts) = h
        .one(&[
            ("traceparent", TP_UNSAMPLED),
            ("tracestate", &members.join(",")),
        ])
        .await;
    assert_eq!(ts, None);

    // Several callbacks: one trace, a different parent id each.
    let got = h.request(&[("traceparent", TP)], 3).await;
    let parents: std::collections::HashSet<String> = got
        .iter()
        .map(|hs| {
            hs.iter()
                .find(|(k, _)| k == "traceparent")
                .map(|(_, v)| Traceparent::parse(v))
                .expect("traceparent")
        })
        .inspect(|tp| assert_eq!(tp.trace_id, TRACE))
        .map(|tp| tp.parent_id)
        .collect();
    assert_eq!(parents.len(), 3);

    // An unsampled caller stays unsampled.
    assert_eq!(h.one(&[("traceparent", TP_UNSAMPLED)]).await.0.flags, "00");
}

/// Trace Context Level 2, as the current text and test.py (`SPEC_LEVEL=2`, strict) have it.
/// The service creates its child spans with `opentelemetry_sdk` (default sampler:
/// parent-based, always on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_passes_the_level_2_cases() {
    let mut h = Harness::new().await;
    let tp = |flags: &str| format!("00-{TRACE}-1234567890123456-{flags}");

    // "Random Trace ID Flag": "If the flag is set in the incoming traceparent header, it
    // MUST also be set in all outgoing traceparent headers which use the same trace-id",
    // and unset when unset. 02 is random and not sampled: the SDK's child span is dropped by
    // its sampler, and the flag must survive that (test.py: test_propagates_random_flag).
    for (incoming, outgoing) in [("02", "02"), ("03", "03"), ("00", "00"), ("01", "01")] {
        let got = h.request(&[("traceparent", &tp(incoming))], 2).await;
        for headers in got {
            let v = headers
                .iter()
                .find(|(k, _)| k == "traceparent")
                .map(|(_, v)| Traceparent::parse(v))
                .expect("traceparent");
            assert_eq!(v.trace_id, TRACE);
            assert_ne!(v.parent_id, "1234567890123456");
            assert_eq!(v.flags, outgoing, "incoming {incoming}");
        }
    }

    // "Other Flags": "Vendors MUST set those to zero" (sampled and random kept).
    for (incoming, outgoing) in [("04", "00"), ("09", "01"), ("0a", "02"), ("ff", "03")] {
        let (v, _) = h.one(&[("traceparent", &tp(incoming))]).await;
        assert_eq!(
            (v.trace_id.as_str(), v.flags.as_str()),
            (TRACE, outgoing),
            "{incoming}"
        );
    }

    // "Key": `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`, `@` a keychar
    // (test.py: test_tracestate_key_illegal_vendor_format, test_tracestate_key_length_limit).
    let long_keys = [
        "z".repeat(256),
        format!("{}@{}", "t".repeat(241), "v".repeat(14)),
        format!("{}@v", "t".repeat(242)),
        format!("t@{}", "v".repeat(15)),
    ];
    for key in ["foo@", "foo@@bar", "foo@bar@baz", "foo@1bar", "1foo"]
        .map(String::from)
        .iter()
        .chain(&long_keys)
    {
        let (v, ts) = h
            .one(&[
                ("traceparent", &tp("00")),
                ("tracestate", &format!("{key}=1,bar=2")),
            ])
            .await;
        assert_eq!(v.trace_id, TRACE);
        assert_eq!(ts, Some(format!("{key}=1,bar=2")), "{key}");
    }
    // 257 characters: the whole tracestate goes.
    let (_, ts) = h
        .one(&[
            ("traceparent", &tp("00")),
            ("tracestate", "foo=1"),
            ("tracestate", &format!("{}=1", "z".repeat(257))),
        ])
        .await;
    assert_eq!(ts, None);

    // Duplicated keys: "vendors MAY also discard duplicate keys"; the tracestate stays and
    // keeps foo=1 (test.py: test_tracestate_duplicated_keys).
    for lines in [
        &["foo=1,foo=2"][..],
        &["foo=1,foo=1"],
        &["foo=1", "foo=2"],
        &["foo=1", "foo=1"],
    ] {
        let mut headers = vec![("traceparent", tp("00"))];
        headers.extend(lines.iter().map(|l| ("tracestate", l.to_string())));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (v, ts) = h.one(&headers).await;
        assert_eq!(v.trace_id, TRACE);
        assert_eq!(ts.as_deref(), Some("foo=1"), "{lines:?}");
    }
}
