//! Client authentication on the OTLP receiver: who may send.
//!
//! An [`Authenticator`] checks each request's headers before its body is read. A request
//! it refuses gets `UNAUTHENTICATED` over gRPC and `401` with `WWW-Authenticate` over HTTP,
//! is counted (`otelcol_receiver_failed_requests{reason="unauthenticated"}`), and is never
//! decoded. What it establishes about the client (`subject`, `scheme`) goes into the
//! batch's [`ClientInfo::auth`](otel_pipeline_core::ClientInfo::auth), where processors
//! read it (`from_context: auth.subject` in the attributes processor).
//!
//! Credentials are [`Secret`]s: they never appear in `Debug` output, logs, error messages
//! or telemetry.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// A credential: compared in constant time, never printed.
///
/// ```
/// use otel_receivers::Secret;
/// let s = Secret::new("s3cr3t");
/// assert_eq!(format!("{s:?}"), "Secret(***)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Whether `candidate` is this secret, in time that depends only on the lengths.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Byte-wise comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// One request, as an authenticator sees it.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    /// The request headers (HTTP) or metadata (gRPC).
    pub headers: &'a http::HeaderMap,
    /// The peer's address.
    pub peer: std::net::SocketAddr,
}

/// Why a request was refused. The message goes back to the client, so it never holds a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// `missing`, `invalid`, or an authenticator's own short reason.
    pub reason: &'static str,
    /// For the client.
    pub message: String,
}

impl AuthError {
    /// No credentials were sent.
    pub fn missing(message: impl Into<String>) -> Self {
        Self {
            reason: "missing",
            message: message.into(),
        }
    }

    /// The credentials sent are not valid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            reason: "invalid",
            message: message.into(),
        }
    }
}

/// The hook for a user's own authentication (an API-key service, OIDC introspection...).
///
/// ```
/// use otel_receivers::{AuthError, AuthRequest, Authenticate};
/// #[derive(Debug)]
/// struct TenantHeader;
/// impl Authenticate for TenantHeader {
///     fn authenticate(&self, r: &AuthRequest<'_>) -> Result<Vec<(String, String)>, AuthError> {
///         match r.headers.get("x-tenant").and_then(|v| v.to_str().ok()) {
///             Some(t) => Ok(vec![("subject".into(), t.into())]),
///             None => Err(AuthError::missing("send x-tenant")),
///         }
///     }
///     fn challenge(&self) -> &str { "X-Tenant" }
/// }
/// ```
pub trait Authenticate: fmt::Debug + Send + Sync + 'static {
    /// Admit the request, with what is known of the client (`("subject", ...)`), or refuse
    /// it.
    fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Vec<(String, String)>, AuthError>;

    /// The `WWW-Authenticate` value of an HTTP `401`, e.g. `Bearer realm="otlp"`.
    fn challenge(&self) -> &str;
}

/// How the receiver authenticates clients.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// `Authorization: Bearer <token>` against a set of tokens.
    Bearer(Arc<BearerTokens>),
    /// A user's own check.
    Custom(Arc<dyn Authenticate>),
}

impl PartialEq for Authenticator {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bearer(a), Self::Bearer(b)) => Arc::ptr_eq(a, b),
            (Self::Custom(a), Self::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Authenticator {
    pub(crate) fn check(
        &self,
        request: &AuthRequest<'_>,
    ) -> Result<Vec<(String, String)>, AuthError> {
        match self {
            Self::Bearer(b) => b.authenticate(request),
            Self::Custom(c) => c.authenticate(request),
        }
    }

    pub(crate) fn challenge(&self) -> &str {
        match self {
            Self::Bearer(b) => b.challenge(),
            Self::Custom(c) => c.challenge(),
        }
    }
}

/// Bearer tokens (the Collector's `bearertokenauth`): from the configuration, and from a
/// file that is re-read when it changes, so tokens rotate without a restart.
///
/// The file holds one token per line, or `subject token` to name whose token it is; blank
/// lines and lines starting with `#` are skipped. A request's `subject` is that name, or
/// `token-<n>` (its line or list position) when unnamed.
///
/// ```
/// use otel_receivers::{BearerTokens, Secret};
/// let auth = BearerTokens::new([Secret::new("t0k3n")]);
/// assert!(format!("{auth:?}").contains("***") && !format!("{auth:?}").contains("t0k3n"));
/// ```
pub struct BearerTokens {
    header: http::HeaderName,
    scheme: String,
    challenge: String,
    fixed: Vec<(String, Secret)>,
    file: Option<PathBuf>,
    from_file: Mutex<FileTokens>,
}

#[derive(Default)]
struct FileTokens {
    modified: Option<SystemTime>,
    checked: Option<Instant>,
    tokens: Vec<(String, Secret)>,
}

/// How often the token file's modification time is looked at.
const FILE_CHECK: Duration = Duration::from_millis(500);

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens")
            .field("header", &self.header)
            .field("scheme", &self.scheme)
            .field("tokens", &format_args!("{} x ***", self.fixed.len()))
            .field("file", &self.file)
            .finish()
    }
}

impl BearerTokens {
    /// Accept these tokens, in `Authorization: Bearer <token>`.
    pub fn new(tokens: impl IntoIterator<Item = Secret>) -> Self {
        Self {
            header: http::header::AUTHORIZATION,
            scheme: "Bearer".into(),
            challenge: "Bearer realm=\"otlp\"".into(),
            fixed: tokens
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("token-{i}"), t))
                .collect(),
            file: None,
            from_file: Mutex::new(FileTokens::default()),
        }
    }

    /// Also accept the tokens in `path`, re-read whenever it changes. The file must be
    /// readable now.
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        let tokens = read_token_file(&path)?;
        *self.from_file.lock() = FileTokens {
            modified: Some(modified),
            checked: Some(Instant::now()),
            tokens,
        };
        self.file = Some(path);
        Ok(self)
    }

    /// Read the token from another header (the Collector's `header`), still with the
    /// scheme prefix unless the scheme is empty.
    pub fn with_header(mut self, header: http::HeaderName, scheme: impl Into<String>) -> Self {
        self.header = header;
        self.scheme = scheme.into();
        self.challenge = if self.scheme.is_empty() {
            format!("{} realm=\"otlp\"", self.header)
        } else {
            format!("{} realm=\"otlp\"", self.scheme)
        };
        self
    }

    /// Re-read the file if it changed since the last look (at most every half second).
    fn refresh(&self) {
        let Some(path) = &self.file else { return };
        let mut state = self.from_file.lock();
        if state.checked.is_some_and(|t| t.elapsed() < FILE_CHECK) {
            return;
        }
        state.checked = Some(Instant::now());
        let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            return; // Gone for a moment (an atomic rename): keep the last tokens.
        };
        if state.modified == Some(modified) {
            return;
        }
        match read_token_file(path) {
            Ok(tokens) => {
                state.tokens = tokens;
                state.modified = Some(modified);
            }
            Err(e) => {
                tracing::warn!(error = %e, "bearer token file unreadable; keeping the previous tokens")
            }
        }
    }
}

fn read_token_file(path: &std::path::Path) -> Result<Vec<(String, Secret)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, line)| match line.split_once(char::is_whitespace) {
            Some((subject, token)) => (subject.to_string(), Secret::new(token.trim())),
            None => (format!("token-{i}"), Secret::new(line)),
        })
        .collect())
}

impl Authenticate for BearerTokens {
    fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Vec<(String, String)>, AuthError> {
        let Some(value) = request.headers.get(&self.header) else {
            return Err(AuthError::missing(format!("no {} header", self.header)));
        };
        let value = value.as_bytes();
        let token = if self.scheme.is_empty() {
            value
        } else {
            let prefix = self.scheme.len();
            match value.get(..prefix) {
                Some(s)
                    if s.eq_ignore_ascii_case(self.scheme.as_bytes())
                        && value.get(prefix) == Some(&b' ') =>
                {
                    value[prefix + 1..].trim_ascii()
                }
                _ => {
                    return Err(AuthError::invalid(format!(
                        "expected {}: {} <token>",
                        self.header, self.scheme
                    )));
                }
            }
        };
        self.refresh();
        let file = self.from_file.lock();
        // Every token is compared, so the time taken does not say which one matched.
        let mut subject: Option<&str> = None;
        for (name, secret) in self.fixed.iter().chain(file.tokens.iter()) {
            if secret.matches(token) && subject.is_none() {
                subject = Some(name);
            }
        }
        match subject {
            Some(s) => Ok(vec![
                ("subject".to_string(), s.to_string()),
                ("scheme".to_string(), "bearer".to_string()),
            ]),
            None => Err(AuthError::invalid("the token is not valid")),
        }
    }

    fn challenge(&self) -> &str {
        &self.challenge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
