//! What every request handler shares: the receiver's settings, each signal's sink, the
//! byte budget, and the steps common to both protocols (deliver, count, identify and
//! authenticate the client).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use otel_pipeline_core::otlp::WireSignal;
use otel_pipeline_core::{Batch, ClientInfo, ConsumeError, Consumer};

use super::auth::{AuthError, AuthRequest};
use super::config::OtlpConfig;
use super::conn::{ByteBudget, ConnAuth};
use super::signal::Sinks;

/// The receiver's state that its request handlers read.
pub(crate) struct Shared {
    pub(crate) config: OtlpConfig,
    pub(crate) sinks: Sinks,
    /// The in-flight byte budget, once the listeners run.
    pub(crate) budget: std::sync::OnceLock<Arc<ByteBudget>>,
    /// What the listeners speak.
    pub(crate) dialect: Dialect,
    /// Listen hosts that did not resolve when the receiver was configured: (path of the
    /// setting, why). The receiver refuses to start while any is left.
    pub(crate) unresolved: Vec<(String, String)>,
}

/// The protocol family a receiver's listeners speak. Every family shares the server:
/// its limits, TLS, authentication, byte budget and counted refusals.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Dialect {
    /// OTLP/gRPC and OTLP/HTTP.
    #[default]
    Otlp,
    /// Zipkin's HTTP API (`/api/v2/spans`, `/api/v1/spans`) on the HTTP listener.
    Zipkin { parse_string_tags: bool },
    /// Jaeger: `api_v2` on the gRPC listener, Thrift on the HTTP one, and UDP endpoints.
    Jaeger(Arc<crate::jaeger::UdpEndpoints>),
}

/// What the pipeline said about one request, in protocol-neutral terms.
pub(crate) enum Outcome {
    Accepted,
    Rejected {
        items: usize,
        message: String,
    },
    Refused {
        retry_after: Duration,
        message: String,
    },
}

/// Push a request (decoded, or checked bytes) into the signal's pipeline and count the result.
pub(crate) async fn deliver<S: WireSignal>(shared: &Shared, batch: Batch<S>) -> Option<Outcome> {
    let sink = shared.sinks.get::<S>()?;
    let n = batch.item_count();
    Some(match sink.consumer.consume(batch).await {
        Ok(()) => {
            sink.telemetry.add_accepted(n);
            Outcome::Accepted
        }
        Err(ConsumeError::Refused(r)) => {
            sink.telemetry.add_refused(n);
            Outcome::Refused {
                retry_after: r.retry_after.unwrap_or(shared.config.default_retry_after),
                message: r.reason.into_owned(),
            }
        }
        Err(ConsumeError::Rejected(r)) => {
            sink.telemetry.add_rejected(r.items);
            Outcome::Rejected {
                items: r.items,
                message: r.reason.into_owned(),
            }
        }
    })
}

/// Count a request that failed before decoding, on the signal's counters if it has a
/// pipeline.
pub(crate) fn count_failed<S: WireSignal>(shared: &Shared, reason: &'static str) {
    if let Some(sink) = shared.sinks.get::<S>() {
        sink.telemetry.add_failed_request(reason);
    }
}

/// Build the [`ClientInfo`] of a request.
pub(crate) fn client_info(
    shared: &Shared,
    peer: Option<SocketAddr>,
    headers: &::http::HeaderMap,
) -> Arc<ClientInfo> {
    let metadata = if shared.config.include_metadata {
        headers
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "content-length"
                        | "content-type"
                        | "content-encoding"
                        | "te"
                        | "grpc-encoding"
                        | "grpc-accept-encoding"
                        | "accept-encoding"
                )
            })
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect()
    } else {
        Vec::new()
    };
    Arc::new(ClientInfo {
        addr: peer,
        metadata,
        auth: Vec::new(),
    })
}

/// Who sent a request: mutual TLS's verdict on the connection first, then the configured
/// authenticator on the headers. The identity is what both established; a refusal carries
/// the `WWW-Authenticate` challenge for HTTP.
pub(crate) async fn authenticate(
    shared: &Shared,
    headers: &::http::HeaderMap,
    peer: SocketAddr,
    conn_auth: &ConnAuth,
) -> Result<Vec<(String, String)>, (AuthError, String)> {
    let mut identity = Vec::new();
    if let Some(verdict) = conn_auth {
        match &**verdict {
            Ok(attrs) => identity.clone_from(attrs),
            Err(e) => return Err((e.clone(), "Mutual realm=\"otlp\"".to_string())),
        }
    }
    if let Some(auth) = &shared.config.auth {
        match auth.check(&AuthRequest { headers, peer }).await {
            // The authenticator's subject wins over the certificate's.
            Ok(attrs) => {
                identity.retain(|(k, _)| !attrs.iter().any(|(a, _)| a == k));
                identity.extend(attrs);
            }
            Err(e) => return Err((e, auth.challenge().to_string())),
        }
    }
    Ok(identity)
}
