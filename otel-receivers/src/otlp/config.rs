//! The OTLP receiver's settings and the addresses it bound.

use std::net::SocketAddr;
use std::time::Duration;

use super::auth::Authenticator;

/// Settings of the OTLP receiver.
///
/// The default listens on loopback only (`127.0.0.1:4317` and `:4318`), as the Collector
/// does since it stopped defaulting to every interface: a receiver reachable from other
/// hosts is a choice made on purpose ([`OtlpConfig::all_interfaces`], or the addresses you
/// set), not an accident of a default.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// gRPC listen address; `None` disables gRPC. Default `127.0.0.1:4317`.
    pub grpc: Option<SocketAddr>,
    /// HTTP listen address; `None` disables HTTP. Default `127.0.0.1:4318`.
    pub http: Option<SocketAddr>,
    /// Largest request accepted on the wire (compressed), in bytes. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Largest request after decompression, in bytes. Default 16 MiB.
    pub max_decompressed_bytes: usize,
    /// Keep request headers / gRPC metadata in the batch's [`ClientInfo`](otel_pipeline_core::ClientInfo) (the
    /// Collector's `include_metadata`). The peer address is always kept. Default off.
    pub include_metadata: bool,
    /// `Retry-After` / `RetryInfo` delay sent with back-pressure when the pipeline gives
    /// none. Default 1 s.
    pub default_retry_after: Duration,
    /// Serve both protocols over TLS with this certificate (needs the `tls` feature).
    /// Default: plain text.
    pub tls: Option<TlsFiles>,
    /// What clients may hold of the receiver: connections, time, memory.
    pub limits: ReceiverLimits,
    /// Who may send: requests without valid credentials are refused before their body is
    /// read. Default: anyone.
    pub auth: Option<Authenticator>,
    /// Cross-origin requests from browsers to the HTTP listener (the Collector's
    /// `cors`), for web SDKs that export straight to the collector. Default: none
    /// (browsers block cross-origin exports).
    pub cors: Option<Cors>,
}

/// Which web origins may send to the HTTP listener, and what their browsers may send.
///
/// ```
/// use otel_receivers::otlp::Cors;
/// let cors = Cors {
///     allowed_origins: vec!["https://*.example.com".into()],
///     ..Cors::default()
/// };
/// assert!(cors.allows("https://shop.example.com"));
/// assert!(!cors.allows("https://example.org"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// Origins allowed: exact (`https://app.example.com`), with one `*` wildcard
    /// (`https://*.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides `Content-Type`, `Content-Encoding`, `Accept` and
    /// `X-Requested-With`; `*` allows any.
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may keep a preflight answer (`Access-Control-Max-Age`).
    pub max_age: Option<u32>,
}

impl Cors {
    /// Whether `origin` may send.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|pattern| {
            if pattern == "*" {
                return true;
            }
            match pattern.split_once('*') {
                None => pattern.eq_ignore_ascii_case(origin),
                Some((head, tail)) => {
                    origin.len() >= head.len() + tail.len()
                        && origin[..head.len()].eq_ignore_ascii_case(head)
                        && origin[origin.len() - tail.len()..].eq_ignore_ascii_case(tail)
                }
            }
        })
    }

    /// Whether a browser may send request header `name`.
    pub(crate) fn allows_header(&self, name: &str) -> bool {
        const ALWAYS: [&str; 4] = [
            "content-type",
            "content-encoding",
            "accept",
            "x-requested-with",
        ];
        ALWAYS.iter().any(|h| h.eq_ignore_ascii_case(name))
            || self
                .allowed_headers
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(name))
    }
}

/// Bounds on what clients may hold of a receiver, so that no number of slow, idle or
/// oversized clients exhausts a gateway. Every limit hit is counted (see
/// `docs/security.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverLimits {
    /// Open connections across both listeners; one more is closed at accept. Default 4096.
    pub max_connections: usize,
    /// Time from opening a connection to its first complete request headers, and on
    /// HTTP/1 for the headers of each request (slowloris). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body once its headers are in. Default 30 s.
    pub body_read_timeout: Duration,
    /// A connection with no request in progress and no bytes moving for this long is
    /// closed. Default 2 min.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval (`None`: no pings). Default 30 s.
    pub http2_keepalive_interval: Option<Duration>,
    /// A PING not answered within this closes the connection. Default 10 s.
    pub http2_keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams (gRPC calls) per connection. Default 100.
    pub max_concurrent_streams: u32,
    /// Request header bytes (HTTP/1 buffer, HTTP/2 header list). Default 64 KiB.
    pub max_header_bytes: usize,
    /// Request bytes, as received and as decompressed, that all requests in progress may
    /// hold together. A request that would pass it is refused as back-pressure
    /// (`RESOURCE_EXHAUSTED` with `RetryInfo`, `429` with `Retry-After`). Default 256 MiB.
    pub max_in_flight_bytes: usize,
    /// Items (spans, data points, log records) one request may carry. More is refused as
    /// bad data (`INVALID_ARGUMENT`, `413`), counted as `too_many_items`: 16 MiB of empty
    /// 2-byte spans is 8 million spans, and every stage pays per span. Default 100 000,
    /// far above what an SDK or Collector sends in one request (a few thousand; the
    /// Collector's 4 MiB message limit holds about 20 000 typical spans).
    pub max_items_per_request: usize,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_header_bytes: 64 << 10,
            max_in_flight_bytes: 256 << 20,
            max_items_per_request: 100_000,
        }
    }
}

/// The server's PEM certificate chain and private key, and for mutual TLS the CA that
/// client certificates must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert_file: std::path::PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key_file: std::path::PathBuf,
    /// Mutual TLS: clients must present a certificate issued by this CA (PEM, the
    /// Collector's `client_ca_file`). A request without one gets `UNAUTHENTICATED` / `401`;
    /// a certificate that does not verify fails the handshake. Default: no client
    /// certificates.
    pub client_ca_file: Option<std::path::PathBuf>,
    /// With `client_ca_file`: the client certificate must also be valid for one of these
    /// names (DNS subject alternative names), which becomes the request's `auth.subject`.
    /// Empty: any certificate from the CA.
    pub client_names: Vec<String>,
    /// The lowest TLS version accepted. Default 1.2.
    pub min_version: Option<otel_pipeline_core::config::TlsVersion>,
    /// The highest TLS version accepted. Default 1.3.
    pub max_version: Option<otel_pipeline_core::config::TlsVersion>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_request_bytes: 4 << 20,
            max_decompressed_bytes: 16 << 20,
            include_metadata: false,
            default_retry_after: Duration::from_secs(1),
            tls: None,
            limits: ReceiverLimits::default(),
            auth: None,
            cors: None,
        }
    }
}

impl OtlpConfig {
    /// Both protocols on every interface, on the standard ports (`0.0.0.0:4317` and
    /// `0.0.0.0:4318`): what an agent or gateway that receives from other pods needs.
    pub fn all_interfaces() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([0, 0, 0, 0], 4317))),
            http: Some(SocketAddr::from(([0, 0, 0, 0], 4318))),
            ..Self::default()
        }
    }

    /// Both protocols on loopback with OS-chosen ports: for tests.
    pub fn loopback() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        }
    }
}

/// Addresses the receiver actually bound (useful with port 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    /// The gRPC listener.
    pub grpc: Option<SocketAddr>,
    /// The HTTP listener.
    pub http: Option<SocketAddr>,
}
