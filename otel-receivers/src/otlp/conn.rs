//! What a connection and its requests share with the server that accepted them: the
//! response body type, the client identity mutual TLS established, the connection
//! counters, and the in-flight byte budget. A leaf of `otlp`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use otel_pipeline_core::telemetry::{Counter, Gauge, Instrument};
use otel_pipeline_core::{BoxError, ComponentTelemetry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::AuthError;

/// Response body of both protocols.
pub(crate) type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// Box a complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Peer address type used by handlers.
pub(crate) type Peer = SocketAddr;

/// What mutual TLS established about a connection's client: its identity, or why it has
/// none. `None` when mutual TLS is not configured.
pub(crate) type ConnAuth = Option<Arc<Result<Vec<(String, String)>, AuthError>>>;

/// Connection-level events, counted on the telemetry of the pipeline that started the
/// listeners (they happen before a request names its signal).
pub(crate) static CONNECTIONS_REFUSED: Instrument = Instrument::counter(
    "otelcol_receiver_refused_connections",
    "{connections}",
    "Connections closed at accept, by reason (max_connections).",
);
pub(crate) static CONNECTIONS_CLOSED: Instrument = Instrument::counter(
    "otelcol_receiver_closed_connections",
    "{connections}",
    "Connections the receiver closed, by reason (header_read_timeout, idle_timeout, protocol_error, tls_handshake).",
);
pub(crate) static CONNECTIONS_OPEN: Instrument = Instrument::gauge(
    "otelcol_receiver_open_connections",
    "{connections}",
    "Connections open now.",
);
pub(crate) static IN_FLIGHT_BYTES: Instrument = Instrument::gauge(
    "otelcol_receiver_in_flight_bytes",
    "By",
    "Request bytes (wire and decompressed) held by requests in progress.",
);

/// The counters behind the instruments above.
pub(crate) struct ConnStats {
    pub(crate) refused_max: Counter,
    pub(crate) header_timeout: Counter,
    pub(crate) idle: Counter,
    pub(crate) protocol_error: Counter,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls_handshake: Counter,
    pub(crate) open: Gauge,
    pub(crate) in_flight: Gauge,
}

impl ConnStats {
    pub(crate) fn new(t: &ComponentTelemetry) -> Self {
        let closed = |reason| t.counter(&CONNECTIONS_CLOSED, &[("reason", reason)]);
        Self {
            refused_max: t.counter(&CONNECTIONS_REFUSED, &[("reason", "max_connections")]),
            header_timeout: closed("header_read_timeout"),
            idle: closed("idle_timeout"),
            protocol_error: closed("protocol_error"),
            tls_handshake: closed("tls_handshake"),
            open: t.gauge(&CONNECTIONS_OPEN, &[]),
            in_flight: t.gauge(&IN_FLIGHT_BYTES, &[]),
        }
    }
}

/// The bytes all requests in progress may hold together ([`ReceiverLimits::max_in_flight_bytes`]).
pub(crate) struct ByteBudget {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) stats: Arc<ConnStats>,
}

/// Bytes a request holds; given back when it is dropped.
pub(crate) struct Held {
    permits: Option<OwnedSemaphorePermit>,
    stats: Arc<ConnStats>,
    bytes: usize,
}

impl ByteBudget {
    /// An empty hold, to grow as a request's body arrives.
    pub(crate) fn hold(self: &Arc<Self>) -> Held {
        Held {
            permits: None,
            stats: Arc::clone(&self.stats),
            bytes: 0,
        }
    }

    /// Take `n` more bytes for `held`, or `false` when the budget has not that many left.
    pub(crate) fn take(&self, held: &mut Held, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        match Arc::clone(&self.permits).try_acquire_many_owned(n32) {
            Ok(p) => {
                match &mut held.permits {
                    Some(existing) => existing.merge(p),
                    None => held.permits = Some(p),
                }
                held.bytes += n;
                self.stats.in_flight.add(n as i64);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats.in_flight.add(-(self.bytes as i64));
    }
}
