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
    /// `Authorization: Basic ...` against htpasswd users.
    Basic(Arc<BasicAuth>),
    /// A user's own check.
    Custom(Arc<dyn Authenticate>),
}

impl PartialEq for Authenticator {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bearer(a), Self::Bearer(b)) => Arc::ptr_eq(a, b),
            (Self::Basic(a), Self::Basic(b)) => Arc::ptr_eq(a, b),
            (Self::Custom(a), Self::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Authenticator {
    pub(crate) async fn check(
        &self,
        request: &AuthRequest<'_>,
    ) -> Result<Vec<(String, String)>, AuthError> {
        match self {
            Self::Bearer(b) => b.authenticate(request),
            Self::Basic(b) => b.check(request).await,
            Self::Custom(c) => c.authenticate(request),
        }
    }

    pub(crate) fn challenge(&self) -> &str {
        match self {
            Self::Bearer(b) => b.challenge(),
            Self::Basic(_) => "Basic realm=\"otlp\", charset=\"UTF-8\"",
            Self::Custom(c) => c.challenge(),
        }
    }
}

/// A credentials file (tokens, htpasswd) that is re-read when it changes, looked at no
/// more than every [`FILE_CHECK`]. A file that is briefly missing (an atomic rename) or
/// unreadable keeps the last good contents.
struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    parse: fn(&str, &str) -> Result<T, String>,
    state: Mutex<WatchedState<T>>,
}

struct WatchedState<T> {
    modified: SystemTime,
    checked: Instant,
    value: T,
}

impl<T> Watched<T> {
    /// Read `path` now; `parse` gets the text and a name for errors.
    fn open(
        path: PathBuf,
        what: &'static str,
        parse: fn(&str, &str) -> Result<T, String>,
    ) -> Result<Self, String> {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let value = parse(&text, &path.display().to_string())?;
        Ok(Self {
            path,
            what,
            parse,
            state: Mutex::new(WatchedState {
                modified,
                checked: Instant::now(),
                value,
            }),
        })
    }

    /// Re-read the file if it changed; whether its contents were replaced.
    fn refresh(&self) -> bool {
        let mut state = self.state.lock();
        if state.checked.elapsed() < FILE_CHECK {
            return false;
        }
        state.checked = Instant::now();
        let Ok(modified) = std::fs::metadata(&self.path).and_then(|m| m.modified()) else {
            return false;
        };
        if state.modified == modified {
            return false;
        }
        let origin = self.path.display().to_string();
        match std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| (self.parse)(&t, &origin))
        {
            Ok(value) => {
                state.value = value;
                state.modified = modified;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, file = %origin, "{} unreadable; keeping the previous contents", self.what);
                false
            }
        }
    }

    /// Look at the current contents.
    fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.state.lock().value)
    }
}

/// Basic authentication (the Collector's `basicauth`): users from an htpasswd file
/// (re-read when it changes) and inline htpasswd lines.
///
/// A line is `user:hash` with a bcrypt hash (`$2y$`, `$2b$`, `$2a$`, as `htpasswd -B`
/// writes them), or `user:password` in plain text (the Collector accepts that inline).
/// Other hash schemes (MD5 `$apr1$`, `{SHA}`, crypt) are refused when loaded, naming the
/// line.
///
/// bcrypt is slow on purpose (tens of milliseconds). Checks run on blocking threads, two at
/// a time at most, and a password that verified is remembered for five minutes under a
/// keyed hash (never the password itself), so a client pays once, not per request.
///
/// ```
/// use otel_receivers::BasicAuth;
/// assert!(BasicAuth::new("ci-agent:s3cr3t", None).is_ok());
/// let err = BasicAuth::new("old:$apr1$x$y", None).unwrap_err();
/// assert!(err.contains("line 1") && !err.contains("$apr1$x$y"));
/// ```
pub struct BasicAuth {
    inline: Vec<(String, Password)>,
    file: Option<Watched<Vec<(String, Password)>>>,
    verified: Mutex<std::collections::HashMap<(String, u64), Instant>>,
    keys: std::collections::hash_map::RandomState,
    slots: Arc<tokio::sync::Semaphore>,
    /// A bcrypt hash of no one's password at the cost the users' hashes have: an unknown
    /// user is checked against it, so a refusal takes as long whether the user exists or
    /// not (no user names told apart by timing).
    decoy: std::sync::OnceLock<Arc<Secret>>,
    /// bcrypt verifications run (the decoy's included).
    bcrypt_runs: Arc<std::sync::atomic::AtomicU64>,
}

/// The bcrypt cost of the first bcrypt hash in `users` (`$2b$12$...` is 12).
fn bcrypt_cost(users: &[(String, Password)]) -> Option<u32> {
    users.iter().find_map(|(_, p)| match p {
        Password::Bcrypt(h) => h.0.get(4..6).and_then(|c| c.parse().ok()),
        Password::Plain(_) => None,
    })
}

#[derive(Clone)]
enum Password {
    Bcrypt(Secret),
    Plain(Secret),
}

/// How long a verified password is remembered.
const VERIFIED_FOR: Duration = Duration::from_secs(300);

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field(
                "inline_users",
                &self.inline.iter().map(|(u, _)| u).collect::<Vec<_>>(),
            )
            .field("file", &self.file.as_ref().map(|f| &f.path))
            .finish_non_exhaustive()
    }
}

fn parse_htpasswd(text: &str, origin: &str) -> Result<Vec<(String, Password)>, String> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("{origin} line {}: expected user:password", i + 1));
        };
        let password = if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            Password::Bcrypt(Secret::new(hash))
        } else if ["$apr1$", "{SHA}", "$1$", "$5$", "$6$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            return Err(format!(
                "{origin} line {} ({user}): only bcrypt hashes (htpasswd -B) or plain passwords are supported",
                i + 1
            ));
        } else {
            Password::Plain(Secret::new(hash))
        };
        users.push((user.to_string(), password));
    }
    Ok(users)
}

impl BasicAuth {
    /// Users from inline htpasswd lines (may be empty) and, optionally, an htpasswd file.
    pub fn new(inline: &str, file: Option<PathBuf>) -> Result<Self, String> {
        let inline = parse_htpasswd(inline, "htpasswd.inline")?;
        let file = file
            .map(|path| Watched::open(path, "htpasswd file", parse_htpasswd))
            .transpose()?;
        if inline.is_empty() && file.as_ref().is_none_or(|f| f.with(Vec::is_empty)) {
            return Err("basic authentication needs at least one user".into());
        }
        Ok(Self {
            inline,
            file,
            verified: Mutex::new(std::collections::HashMap::new()),
            keys: std::collections::hash_map::RandomState::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(2)),
            decoy: std::sync::OnceLock::new(),
            bcrypt_runs: Arc::default(),
        })
    }

    /// The bcrypt cost the users' hashes have; `None` when no user has a bcrypt hash
    /// (then every check is a constant-time comparison anyway).
    fn users_cost(&self) -> Option<u32> {
        bcrypt_cost(&self.inline).or_else(|| {
            self.file
                .as_ref()
                .and_then(|f| f.with(|users| bcrypt_cost(users)))
        })
    }

    /// Spend what checking `password` against a bcrypt hash costs, for a user that does
    /// not exist (the decoy hash is made once, on a blocking thread).
    async fn check_decoy(&self, password: &[u8]) -> Result<(), AuthError> {
        let Some(cost) = self.users_cost() else {
            return Ok(());
        };
        let Ok(_slot) = Arc::clone(&self.slots).acquire_owned().await else {
            return Err(AuthError::invalid("the receiver is stopping"));
        };
        let decoy = self.decoy.get().cloned();
        let password = password.to_vec();
        let runs = Arc::clone(&self.bcrypt_runs);
        let made = tokio::task::spawn_blocking(move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (decoy, made) = match decoy {
                Some(d) => (d, None),
                None => {
                    let hash =
                        bcrypt::hash(b"no user has this password", cost.clamp(4, 31)).ok()?;
                    let d = Arc::new(Secret::new(hash));
                    (Arc::clone(&d), Some(d))
                }
            };
            let _ = bcrypt::verify(&password, &decoy.0);
            made
        })
        .await
        .ok()
        .flatten();
        if let Some(d) = made {
            let _ = self.decoy.set(d);
        }
        Ok(())
    }

    /// Re-read the htpasswd file if it changed; passwords verified against the old one
    /// are checked again.
    fn refresh(&self) {
        if self.file.as_ref().is_some_and(Watched::refresh) {
            self.verified.lock().clear();
        }
    }

    fn key(&self, password: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.keys.build_hasher();
        h.write(password);
        h.finish()
    }

    async fn check(&self, request: &AuthRequest<'_>) -> Result<Vec<(String, String)>, AuthError> {
        use base64::Engine;
        let Some(value) = request.headers.get(http::header::AUTHORIZATION) else {
            return Err(AuthError::missing("no authorization header"));
        };
        let value = value.as_bytes();
        let encoded = match value.get(..6) {
            Some(s) if s.eq_ignore_ascii_case(b"basic ") => value[6..].trim_ascii(),
            _ => {
                return Err(AuthError::invalid(
                    "expected authorization: Basic <credentials>",
                ));
            }
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AuthError::invalid("the credentials are not base64"))?;
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return Err(AuthError::invalid("the credentials are not user:password"));
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user = String::from_utf8_lossy(user).into_owned();
        self.refresh();
        let stored = self
            .inline
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.clone())
            .or_else(|| {
                self.file.as_ref().and_then(|f| {
                    f.with(|users| {
                        users
                            .iter()
                            .find(|(u, _)| *u == user)
                            .map(|(_, p)| p.clone())
                    })
                })
            });
        let ok = match stored {
            None => {
                // As long as a wrong password for a known user takes.
                self.check_decoy(password).await?;
                false
            }
            Some(Password::Plain(p)) => p.matches(password),
            Some(Password::Bcrypt(hash)) => {
                let key = (user.clone(), self.key(password));
                let remembered = self
                    .verified
                    .lock()
                    .get(&key)
                    .is_some_and(|at| at.elapsed() < VERIFIED_FOR);
                if remembered {
                    true
                } else {
                    let Ok(_slot) = Arc::clone(&self.slots).acquire_owned().await else {
                        return Err(AuthError::invalid("the receiver is stopping"));
                    };
                    let password = password.to_vec();
                    let runs = Arc::clone(&self.bcrypt_runs);
                    let verified = tokio::task::spawn_blocking(move || {
                        runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        bcrypt::verify(&password, &hash.0).unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false);
                    if verified {
                        let mut cache = self.verified.lock();
                        if cache.len() > 10_000 {
                            cache.retain(|_, at| at.elapsed() < VERIFIED_FOR);
                        }
                        cache.insert(key, Instant::now());
                    }
                    verified
                }
            }
        };
        if ok {
            Ok(vec![
                ("subject".to_string(), user),
                ("scheme".to_string(), "basic".to_string()),
            ])
        } else {
            Err(AuthError::invalid("unknown user or wrong password"))
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
    file: Option<Watched<Vec<(String, Secret)>>>,
}

/// How often the token file's modification time is looked at.
const FILE_CHECK: Duration = Duration::from_millis(500);

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens")
            .field("header", &self.header)
            .field("scheme", &self.scheme)
            .field("tokens", &format_args!("{} x ***", self.fixed.len()))
            .field("file", &self.file.as_ref().map(|f| &f.path))
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
        }
    }

    /// Also accept the tokens in `path`, re-read whenever it changes. The file must be
    /// readable now.
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> Result<Self, String> {
        self.file = Some(Watched::open(path.into(), "token file", parse_tokens)?);
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
}

fn parse_tokens(text: &str, _origin: &str) -> Result<Vec<(String, Secret)>, String> {
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
        // An empty credential never matches, whatever the configuration holds.
        if token.is_empty() {
            return Err(AuthError::invalid("the token is empty"));
        }
        // Every token is compared, so the time taken does not say which one matched.
        let find = |tokens: &[(String, Secret)]| {
            let mut subject: Option<String> = None;
            for (name, secret) in tokens {
                if secret.matches(token) && subject.is_none() {
                    subject = Some(name.clone());
                }
            }
            subject
        };
        let mut subject = find(&self.fixed);
        if let Some(f) = &self.file {
            f.refresh();
            subject = f.with(|tokens| find(tokens)).or(subject);
        }
        match subject {
            Some(s) => Ok(vec![
                ("subject".to_string(), s),
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

    /// A configuration that let an empty token in (built in code, past the YAML check)
    /// still refuses `Authorization: Bearer ` with nothing after it.
    #[test]
    fn an_empty_credential_never_matches() {
        let auth = BearerTokens::new([Secret::new(""), Secret::new("t0k3n")]);
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let ask = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static(value),
            );
            auth.authenticate(&AuthRequest {
                headers: &headers,
                peer,
            })
        };
        assert!(ask("Bearer ").is_err());
        assert!(ask("Bearer    ").is_err());
        assert!(ask("Bearer t0k3n").is_ok());
    }

    /// An unknown user costs a bcrypt verification, as a known user with a wrong password
    /// does: refusals cannot tell user names apart by timing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_user_costs_what_a_known_one_does() {
        use base64::Engine;
        use std::sync::atomic::Ordering;
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = BasicAuth::new(&format!("known:{hash}"), None).unwrap();
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let ask = async |user: &str, password: &str| {
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            auth.check(&AuthRequest {
                headers: &headers,
                peer,
            })
            .await
        };
        assert!(ask("known", "wrong").await.is_err());
        assert_eq!(auth.bcrypt_runs.load(Ordering::Relaxed), 1);
        assert!(ask("nobody", "wrong").await.is_err());
        assert_eq!(auth.bcrypt_runs.load(Ordering::Relaxed), 2, "the decoy ran");
        assert!(ask("nobody", "again").await.is_err());
        assert_eq!(auth.bcrypt_runs.load(Ordering::Relaxed), 3);
        assert!(ask("known", "right").await.is_ok());
        // Plain users only: nothing to imitate, every check is a constant-time comparison.
        let plain = BasicAuth::new("p:pw", None).unwrap();
        let mut headers = http::HeaderMap::new();
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("q:pw")
        );
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        assert!(
            plain
                .check(&AuthRequest {
                    headers: &headers,
                    peer
                })
                .await
                .is_err()
        );
        assert_eq!(plain.bcrypt_runs.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
