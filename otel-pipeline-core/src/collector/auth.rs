//! The Collector's authenticator extensions, read once for every component that names one
//! (`auth: { authenticator: bearertokenauth/server }` on a receiver or an exporter).
//!
//! - `bearertokenauth`: `scheme` (default `Bearer`), `header` (default `Authorization`),
//!   `token`, `tokens`, `filename`. A receiver accepts any of the tokens (the file is
//!   re-read when it changes); an exporter sends `token` (or the file's).
//! - `basicauth`: `htpasswd.file` / `htpasswd.inline` for a receiver, `client_auth.username`
//!   / `client_auth.password` for an exporter.
//! - `headers_setter`: for exporters, `headers`: each a `key`, an `action` (`insert`,
//!   `update`, `upsert` (default) or `delete`) and a `value`, or `from_context` (a request
//!   header the receiver kept with `include_metadata`, or `auth.<attribute>`) with an
//!   optional `default_value`: set per request from the client that sent the data.
//!
//! Credentials read here are never printed: `Debug` shows them as `***`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::factory::{Extension, ExtensionFactory, Noop, Section};
use crate::config::ConfigError;

/// One authenticator extension's settings.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthExtension {
    /// `bearertokenauth`.
    Bearer {
        /// The scheme before the token (`Bearer`); empty for a bare token.
        scheme: String,
        /// The header that carries it.
        header: String,
        /// Tokens given inline (`token`, `tokens`).
        tokens: Vec<String>,
        /// A file with the token(s), re-read when it changes.
        filename: Option<PathBuf>,
    },
    /// `headers_setter`: request headers an exporter sets from each request's client.
    HeadersSetter {
        /// The rules, in order.
        headers: Vec<HeaderRule>,
    },
    /// `basicauth`.
    Basic {
        /// `htpasswd.file`.
        htpasswd_file: Option<PathBuf>,
        /// `htpasswd.inline`.
        htpasswd_inline: String,
        /// `client_auth`: `(username, password)` an exporter sends.
        client: Option<(String, String)>,
    },
}

impl fmt::Debug for AuthExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer {
                scheme,
                header,
                tokens,
                filename,
            } => f
                .debug_struct("Bearer")
                .field("scheme", scheme)
                .field("header", header)
                .field("tokens", &format_args!("{} x ***", tokens.len()))
                .field("filename", filename)
                .finish(),
            Self::Basic {
                htpasswd_file,
                client,
                ..
            } => f
                .debug_struct("Basic")
                .field("htpasswd_file", htpasswd_file)
                .field("htpasswd_inline", &"***")
                .field("client", &client.as_ref().map(|(u, _)| (u, "***")))
                .finish(),
            // Fixed values may be credentials: only the keys are shown.
            Self::HeadersSetter { headers } => f
                .debug_struct("HeadersSetter")
                .field(
                    "headers",
                    &headers.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BearerYaml {
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    header: Option<String>,
    /// `Some(None)`: the key is there with no value (`${env:TOKEN}` unset).
    #[serde(default, deserialize_with = "present")]
    token: Option<Option<String>>,
    #[serde(default)]
    tokens: Option<Vec<Option<String>>>,
    #[serde(default)]
    filename: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicYaml {
    #[serde(default)]
    htpasswd: Option<HtpasswdYaml>,
    #[serde(default)]
    client_auth: Option<ClientAuthYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HtpasswdYaml {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    inline: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientAuthYaml {
    username: String,
    password: String,
}

/// What a `headers_setter` rule does with its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    /// Set it unless the exporter already sends it.
    Insert,
    /// Set it only if the exporter already sends it.
    Update,
    /// Set it.
    #[default]
    Upsert,
    /// Do not send it.
    Delete,
}

/// One `headers_setter` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// The header.
    pub key: String,
    /// What to do.
    #[serde(default)]
    pub action: HeaderAction,
    /// A fixed value.
    #[serde(default)]
    pub value: Option<String>,
    /// The client metadata key (a request header kept with `include_metadata`, or
    /// `auth.<attribute>`) whose value to send.
    #[serde(default)]
    pub from_context: Option<String>,
    /// Sent when `from_context` has no value.
    #[serde(default)]
    pub default_value: Option<String>,
}

impl HeaderRule {
    /// The value to send for a request from `client`; `None`: nothing to set.
    pub fn value_for(&self, client: Option<&crate::ClientInfo>) -> Option<String> {
        if let Some(v) = &self.value {
            return Some(v.clone());
        }
        let key = self.from_context.as_deref()?;
        let found = client.and_then(|c| match key.strip_prefix("auth.") {
            Some(attr) => c.auth(attr),
            None => c.metadata(key),
        });
        found
            .map(str::to_string)
            .or_else(|| self.default_value.clone())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadersSetterYaml {
    headers: Vec<HeaderRule>,
}

/// A key that is present, even with a null value (`Some(None)`), apart from an absent one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Read an authenticator extension's section.
pub fn read(section: &Section<'_>) -> Result<AuthExtension, ConfigError> {
    match section.id().kind() {
        "bearertokenauth" => {
            let y: BearerYaml = section.deserialize()?;
            // An empty token (`token: ${env:TOKEN}` with TOKEN unset) would let a request
            // with an empty credential through: refused here, naming the key.
            let empty = |t: &Option<String>| t.as_deref().is_none_or(|t| t.trim().is_empty());
            if y.token.as_ref().is_some_and(empty) {
                return Err(section.error(
                    "token",
                    "the token is empty (an unset environment variable?): refused",
                ));
            }
            if let Some(i) = y.tokens.iter().flatten().position(empty) {
                return Err(section.error(
                    &format!("tokens[{i}]"),
                    "the token is empty (an unset environment variable?): refused",
                ));
            }
            let mut tokens: Vec<String> = y.token.flatten().into_iter().collect();
            tokens.extend(y.tokens.into_iter().flatten().flatten());
            if tokens.is_empty() && y.filename.is_none() {
                return Err(section.error("", "give token, tokens or filename"));
            }
            if let Some(f) = &y.filename
                && !f.exists()
            {
                return Err(section.error("filename", format!("{} does not exist", f.display())));
            }
            Ok(AuthExtension::Bearer {
                scheme: y.scheme.unwrap_or_else(|| "Bearer".into()),
                header: y.header.unwrap_or_else(|| "Authorization".into()),
                tokens,
                filename: y.filename,
            })
        }
        "basicauth" => {
            let y: BasicYaml = section.deserialize()?;
            let (htpasswd_file, htpasswd_inline) = match y.htpasswd {
                Some(h) => (h.file, h.inline.unwrap_or_default()),
                None => (None, String::new()),
            };
            if let Some(f) = &htpasswd_file
                && !f.exists()
            {
                return Err(
                    section.error("htpasswd.file", format!("{} does not exist", f.display()))
                );
            }
            if htpasswd_file.is_none()
                && htpasswd_inline.trim().is_empty()
                && y.client_auth.is_none()
            {
                return Err(section.error(
                    "",
                    "give htpasswd (for receivers) or client_auth (for exporters)",
                ));
            }
            Ok(AuthExtension::Basic {
                htpasswd_file,
                htpasswd_inline,
                client: y.client_auth.map(|c| (c.username, c.password)),
            })
        }
        "headers_setter" => {
            let y: HeadersSetterYaml = section.deserialize()?;
            for (i, h) in y.headers.iter().enumerate() {
                let at = |k: &str| format!("headers[{i}].{k}");
                if h.key.trim().is_empty() {
                    return Err(section.error(&at("key"), "give the header's name"));
                }
                if http_name_invalid(&h.key) {
                    return Err(section.error(&at("key"), format!("`{}` is not a header name", h.key)));
                }
                match (h.action, &h.value, &h.from_context) {
                    (HeaderAction::Delete, _, _) => {}
                    (_, Some(_), Some(_)) => {
                        return Err(section.error(&at("value"), "give value or from_context, not both"));
                    }
                    (_, None, None) => {
                        return Err(section.error(&at("value"), "give value or from_context"));
                    }
                    _ => {}
                }
            }
            Ok(AuthExtension::HeadersSetter { headers: y.headers })
        }
        other => Err(section.error(
            "",
            format!(
                "`{other}` is not an authenticator this collector has (bearertokenauth, basicauth, headers_setter)"
            ),
        )),
    }
}

/// The extension a component names in `auth.authenticator` (at `subpath` of `section`).
pub fn referenced(
    section: &Section<'_>,
    authenticator: &str,
    subpath: &str,
) -> Result<AuthExtension, ConfigError> {
    let ext = section.referenced("extensions", authenticator, subpath)?;
    read(&ext)
}

/// The `bearertokenauth` and `basicauth` extensions: checked when loaded; the components
/// that name them build their authenticators from the same section.
pub(crate) struct AuthExtensionFactory(pub(crate) &'static str);

impl ExtensionFactory for AuthExtensionFactory {
    fn kind(&self) -> &'static str {
        self.0
    }
    fn create(&self, section: &Section<'_>) -> Result<Box<dyn Extension>, ConfigError> {
        read(section)?;
        Ok(Box::new(Noop))
    }
}

/// Whether `name` cannot be an HTTP header name (token characters only).
fn http_name_invalid(name: &str) -> bool {
    !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The credentials an exporter sends for `ext`: a header name and value. A
/// `headers_setter`'s headers are set per request instead (its rules, from
/// [`AuthExtension::HeadersSetter`]).
pub fn client_header(ext: &AuthExtension) -> Result<(String, String), String> {
    match ext {
        AuthExtension::HeadersSetter { .. } => {
            Err("headers_setter sets its headers per request, not once".into())
        }
        AuthExtension::Bearer {
            scheme,
            header,
            tokens,
            filename,
        } => {
            let token = match (tokens.first(), filename) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .trim()
                    .to_string(),
                (None, None) => return Err("no token".into()),
            };
            let value = if scheme.is_empty() {
                token
            } else {
                format!("{scheme} {token}")
            };
            Ok((header.to_ascii_lowercase(), value))
        }
        AuthExtension::Basic { client, .. } => {
            let (user, password) = client
                .as_ref()
                .ok_or("basicauth needs client_auth to authenticate an exporter")?;
            Ok((
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{password}").as_bytes())
                ),
            ))
        }
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic scheme.
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("ci-agent:s3cr3t", "Y2ktYWdlbnQ6czNjcjN0"),
        ] {
            assert_eq!(super::base64_encode(input.as_bytes()), want);
        }
    }
}
