//! Reading and inflating request bodies within the receiver's limits: size, time, and the
//! bytes all requests in progress may hold together.

use std::io::Read;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn::Held;
use super::shared::Shared;

/// Why a body was not read.
pub(crate) enum BodyError {
    /// Over `max_request_bytes` (as declared or as sent).
    TooLarge,
    /// Not complete within `body_read_timeout`.
    Timeout,
    /// The in-flight byte budget is spent: back-pressure.
    Busy,
    /// The connection failed mid-body.
    Read(hyper::Error),
}

/// Read a whole body of at most `max` bytes, taking each chunk from the in-flight budget
/// as it arrives.
pub(crate) async fn read(
    shared: &Shared,
    mut body: Incoming,
    max: usize,
    declared: Option<usize>,
) -> Result<(Bytes, Held), BodyError> {
    let Some(budget) = shared.budget.get() else {
        return Err(BodyError::Busy);
    };
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let mut held = budget.hold();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Read)?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + chunk.len() > max {
                return Err(BodyError::TooLarge);
            }
            if !budget.take(&mut held, chunk.len()) {
                return Err(BodyError::Busy);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(shared.config.limits.body_read_timeout, reading).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok((buf.freeze(), held)),
    }
}

/// A body's compression, from `Content-Encoding` (HTTP) or `grpc-encoding` (gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compressed {
    Gzip,
    /// zlib-wrapped deflate (`deflate` in HTTP, as browsers and the Collector read it).
    Zlib,
    Zstd,
}

impl Compressed {
    /// The encoding named `name` (case-insensitive); `None` for identity or unknown.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [
            ("gzip", Self::Gzip),
            ("deflate", Self::Zlib),
            ("zlib", Self::Zlib),
            ("zstd", Self::Zstd),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| c)
    }

    /// Its name, for error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zlib => "deflate",
            Self::Zstd => "zstd",
        }
    }
}

/// Why a compressed body was not inflated.
pub(crate) enum Inflate {
    /// Inflates past `max_decompressed_bytes` (a decompression bomb).
    TooLarge,
    /// Not in its encoding, or corrupt.
    Invalid(std::io::Error),
    /// The in-flight byte budget is spent: back-pressure.
    Busy,
}

/// Inflate `body` on a blocking thread (never on the runtime's), at most `limit` bytes,
/// taking the output from the in-flight budget as it grows. A bomb is stopped at the limit
/// without inflating the rest.
pub(crate) async fn inflate(
    shared: &Arc<Shared>,
    body: Bytes,
    encoding: Compressed,
    limit: usize,
    mut held: Held,
) -> Result<(Bytes, Held), Inflate> {
    let shared = Arc::clone(shared);
    let work = tokio::task::spawn_blocking(move || {
        let Some(budget) = shared.budget.get() else {
            return Err(Inflate::Busy);
        };
        const CHUNK: usize = 64 << 10;
        let mut decoder: Box<dyn Read> = match encoding {
            Compressed::Gzip => Box::new(flate2::read::GzDecoder::new(&body[..])),
            Compressed::Zlib => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
            Compressed::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&body[..]).map_err(Inflate::Invalid)?,
            ),
        };
        let mut out: Vec<u8> = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = decoder.read(&mut chunk).map_err(Inflate::Invalid)?;
            if n == 0 {
                break;
            }
            if out.len() + n > limit {
                return Err(Inflate::TooLarge);
            }
            if !budget.take(&mut held, n) {
                return Err(Inflate::Busy);
            }
            out.extend_from_slice(&chunk[..n]);
        }
        Ok((Bytes::from(out), held))
    });
    match work.await {
        Ok(result) => result,
        Err(e) => Err(Inflate::Invalid(std::io::Error::other(e.to_string()))),
    }
}
