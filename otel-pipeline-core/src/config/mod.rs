//! Configuration in the OpenTelemetry Collector's shape (feature `config`).
//!
//! Every component config is a serde struct that refuses unknown keys. [`from_yaml`] loads
//! one from YAML and names the path of whatever is wrong, prefixed with where the config
//! sits (`processors.filter/health.traces.span[0]`), so a typo is an error, never a
//! silently ignored setting.

mod yaml;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use yaml::Location;
pub(crate) use yaml::{Node, NodeValue, merge, parse};

/// A configuration that could not be loaded or validated. Its `Debug` is its `Display`
/// text (`file:line:col: path: message`), so `?` from `main` prints that.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Where: `processors.filter.traces.span[0]`.
    pub path: String,
    /// What.
    pub message: String,
    /// The file, line and column, when the configuration came from a file.
    pub location: Option<Location>,
}

crate::id::readable_debug!(ConfigError, |s, f| f
    .debug_struct("ConfigError")
    .field("path", &s.path)
    .field("message", &s.message)
    .field("location", &s.location)
    .finish());

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.location {
            write!(f, "{at}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }

    /// The same error, placed at `location` in a file.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }
}

/// Deserialize `T` from YAML; errors name `prefix` plus the path inside the document.
///
/// ```
/// use otel_pipeline_core::config::from_yaml;
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Batch { send_batch_size: u32 }
/// let err = from_yaml::<Batch>("processors.batch", "send_batch_sise: 10").unwrap_err();
/// assert!(err.to_string().starts_with("processors.batch.send_batch_sise: unknown field"));
/// ```
pub fn from_yaml<T: for<'de> Deserialize<'de>>(prefix: &str, yaml: &str) -> Result<T, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(yaml);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") | (false, "") => prefix.to_string(),
            (false, p) => format!("{prefix}.{p}"),
        };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

/// Load the configuration of processor `id` (`filter/health`) from a whole Collector-style
/// document; errors name `processors.<id>.<path>`.
pub fn processor_config<T: for<'de> Deserialize<'de>>(
    document: &str,
    id: &str,
) -> Result<T, ConfigError> {
    let root: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(document).map_err(|e| ConfigError::new("", e.to_string()))?;
    let section = root
        .get("processors")
        .and_then(|p| p.get(id))
        .ok_or_else(|| ConfigError::new(format!("processors.{id}"), "not in the document"))?;
    // An empty section (`batch:`) means all defaults.
    let yaml = if section.is_null() {
        "{}".to_string()
    } else {
        serde_yaml_ng::to_string(section)
            .map_err(|e| ConfigError::new(format!("processors.{id}"), e.to_string()))?
    };
    from_yaml(&format!("processors.{id}"), &yaml)
}

/// Parse a Collector-style duration: `200ms`, `5s`, `1m30s`, `1h`, `500us`, `10ns`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}`: missing unit (use ns, us, ms, s, m or h)"))?;
        if digits == 0 {
            return Err(format!("`{text}` is not a duration"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration"))?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| i + digits);
        let unit = &rest[digits..unit_end];
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "`{text}`: unknown unit `{unit}` (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total += Duration::from_nanos((value * nanos) as u64);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// Serde helper: a Collector-style duration string.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Serde helper: an optional Collector-style duration string.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    /// `"1.2"` or `"1.3"`, as the Collector writes them.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "1.2" => Ok(Self::V1_2),
            "1.3" => Ok(Self::V1_3),
            "1.0" | "1.1" => Err(format!(
                "TLS {s} is not offered: it is deprecated (RFC 8996) and rustls has no support for it; use 1.2 or 1.3"
            )),
            other => Err(format!("`{other}` is not a TLS version: use 1.2 or 1.3")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10ns"), Ok(Duration::from_nanos(10)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
