//! Names and errors every other module uses: component ids and kinds, and the errors of
//! starting and stopping. A leaf: it imports nothing from this crate.

use std::borrow::Cow;
use std::fmt;

/// A boxed error from a component's start or shutdown.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A component id in the Collector's `type[/name]` form: `otlp`, `batch/agent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentId {
    kind: Cow<'static, str>,
    name: Option<Cow<'static, str>>,
}

impl ComponentId {
    /// An id with only a type, e.g. `ComponentId::new("batch")`.
    pub fn new(kind: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: kind.into(),
            name: None,
        }
    }

    /// The same type with a name: `batch` becomes `batch/agent`.
    pub fn with_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The component type (`batch` in `batch/agent`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The name after the slash, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.kind, name),
            None => f.write_str(&self.kind),
        }
    }
}

impl std::str::FromStr for ComponentId {
    type Err = BuildError;

    /// Parse `type` or `type/name`; the type must be non-empty.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        if kind.is_empty() || name.is_some_and(str::is_empty) {
            return Err(BuildError::InvalidId(s.to_string()));
        }
        let id = Self::new(kind.to_string());
        Ok(match name {
            Some(n) => id.with_name(n.to_string()),
            None => id,
        })
    }
}

/// Which role a component plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    /// Brings data in.
    Receiver,
    /// Transforms, filters, batches or samples.
    Processor,
    /// Sends data out.
    Exporter,
    /// Serves the process, not a pipeline (`health_check`).
    Extension,
}

impl ComponentKind {
    /// `receiver`, `processor` or `exporter`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiver => "receiver",
            Self::Processor => "processor",
            Self::Exporter => "exporter",
            Self::Extension => "extension",
        }
    }
}

/// Errors a user's `main` returns with `?` are printed with `Debug`: they read as their
/// `Display` text (`{:#?}` shows the structure).
macro_rules! readable_debug {
    ($t:ty, |$s:ident, $f:ident| $structure:expr) => {
        impl fmt::Debug for $t {
            fn fmt(&self, $f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let $s = self;
                if $f.alternate() {
                    $structure
                } else {
                    fmt::Display::fmt(self, $f)
                }
            }
        }
    };
}
#[cfg(feature = "config")]
pub(crate) use readable_debug;

readable_debug!(StartError, |s, f| f
    .debug_struct("StartError")
    .field("component", &s.component)
    .field("source", &s.source)
    .finish());
readable_debug!(ShutdownError, |s, f| f
    .debug_struct("ShutdownError")
    .field("failures", &s.failures)
    .finish());
readable_debug!(BuildError, |s, f| match s {
    BuildError::InvalidConfig {
        component,
        path,
        message,
    } => f
        .debug_struct("InvalidConfig")
        .field("component", component)
        .field("path", path)
        .field("message", message)
        .finish(),
    BuildError::InvalidId(id) => f.debug_tuple("InvalidId").field(id).finish(),
    BuildError::DuplicateId { kind, id, pipeline } => f
        .debug_struct("DuplicateId")
        .field("kind", kind)
        .field("id", id)
        .field("pipeline", pipeline)
        .finish(),
});

/// A component failed to start.
#[derive(thiserror::Error)]
#[error("{component} failed to start: {source}")]
pub struct StartError {
    /// The component.
    pub component: ComponentId,
    /// Why.
    #[source]
    pub source: BoxError,
}

impl StartError {
    pub(crate) fn new(
        component: ComponentId,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            component,
            source: Box::new(source),
        }
    }

    pub(crate) fn from_boxed(component: ComponentId, source: BoxError) -> Self {
        Self { component, source }
    }
}

/// Shutdown finished, but not cleanly: each entry names a component and what went wrong
/// (an error, or the deadline passing before it finished).
#[derive(thiserror::Error)]
pub struct ShutdownError {
    /// `(component, problem)` pairs in shutdown order.
    pub failures: Vec<(ComponentId, String)>,
}

impl ShutdownError {
    pub(crate) fn from_failures(failures: Vec<(ComponentId, String)>) -> Result<(), Self> {
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Self { failures })
        }
    }
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shutdown was not clean:")?;
        for (id, problem) in &self.failures {
            write!(f, " {id}: {problem};")?;
        }
        Ok(())
    }
}

/// Why a pipeline could not be built.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A component's configuration is invalid. `path` names the offending setting.
    #[error("{component}: invalid `{path}`: {message}")]
    InvalidConfig {
        /// The component.
        component: ComponentId,
        /// The setting, e.g. `policies[2].latency.threshold_ms`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A component id is not of the form `type[/name]`.
    #[error("invalid component id `{0}`: expected `type` or `type/name`")]
    InvalidId(String),
    /// Two components of the same kind share an id in one pipeline.
    #[error("duplicate {kind} id `{id}` in pipeline `{pipeline}`", kind = .kind.as_str())]
    DuplicateId {
        /// Receiver, processor or exporter.
        kind: ComponentKind,
        /// The repeated id.
        id: ComponentId,
        /// The pipeline.
        pipeline: String,
    },
}
