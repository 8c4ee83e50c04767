//! The `routing` connector: each resource, span or log record goes to the pipelines of
//! the first route whose condition holds, or to `default_pipelines`.
//!
//! The Collector's shape:
//! ```yaml
//! connectors:
//!   routing:
//!     default_pipelines: [traces/other]
//!     error_mode: ignore            # propagate (default), ignore, silent
//!     table:
//!       - statement: route() where resource.attributes["tenant"] == "acme"
//!         pipelines: [traces/acme]
//!       - condition: attributes["http.route"] == "/checkout"
//!         context: span             # resource (default), span, log, request
//!         pipelines: [traces/checkout]
//!       - condition: request["X-Tenant"] == "beta"
//!         context: request
//!         pipelines: [traces/beta]
//! ```
//! Routes are tried in order and the first that matches wins (the Collector's
//! `match_once`, its only behaviour since v0.116). What matches no route and has no
//! default pipeline is dropped and counted (`unrouted`). A condition that cannot be
//! evaluated follows `error_mode`: `propagate` rejects the batch (counted), `ignore` and
//! `silent` take the condition as false and count the error.

use std::sync::Arc;

use otel_pipeline_core::config::ConfigError;
use otel_pipeline_core::connector::{Connector, Downstream};
use otel_pipeline_core::proto::common::v1::InstrumentationScope;
use otel_pipeline_core::proto::logs::v1::ResourceLogs;
use otel_pipeline_core::proto::metrics::v1::ResourceMetrics;
use otel_pipeline_core::proto::resource::v1::Resource;
use otel_pipeline_core::proto::trace::v1::ResourceSpans;
use otel_pipeline_core::{
    Batch, BuildError, ClientInfo, ComponentContext, ComponentId, ComponentTelemetry, ConsumeError,
    Consumer, DropReason, Logs, Metrics, Signal, Traces,
};
use serde::Deserialize;

use crate::condition::{Condition, Cx, EvalError, Item, SpanContext, Target};
use crate::filter::ErrorMode;

/// Dropped: matched no route, and the connector has no default pipelines.
const UNROUTED: DropReason = DropReason::new("unrouted");

/// The `routing` connector's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Where what matches no route goes; nowhere (dropped, counted) when empty.
    #[serde(default)]
    pub default_pipelines: Vec<String>,
    /// What a condition that cannot be evaluated does.
    #[serde(default)]
    pub error_mode: ErrorMode,
    /// Accepted for older configurations: the first matching route always wins.
    #[serde(default)]
    pub match_once: Option<bool>,
    /// The routes, tried in order.
    #[serde(default)]
    pub table: Vec<Route>,
}

/// One route: a condition (or an OTTL `route() where ...` statement) and its pipelines.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `route() where <condition>`.
    #[serde(default)]
    pub statement: Option<String>,
    /// A condition.
    #[serde(default)]
    pub condition: Option<String>,
    /// What the condition reads: `resource` (default), `span`, `log`, `request`.
    #[serde(default)]
    pub context: Option<String>,
    /// The pipelines it sends to.
    #[serde(default)]
    pub pipelines: Vec<String>,
}

#[derive(Debug, Clone)]
enum Test {
    Always,
    Resource(Condition),
    Item(Condition),
    /// `request["key"] == "value"` (or `!=`) on the client's metadata.
    Request {
        key: String,
        value: String,
        equal: bool,
    },
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    test: Test,
    pipelines: Vec<usize>,
}

/// The `routing` connector (traces, metrics and logs, each to pipelines of its own
/// signal). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Routing {
    id: ComponentId,
    config: RoutingConfig,
}

impl Routing {
    /// A routing connector with `config`; checked when built (the pipelines it names must
    /// be those it feeds).
    pub fn new(config: RoutingConfig) -> Self {
        Self {
            id: ComponentId::new("routing"),
            config,
        }
    }

    /// Under another id (`routing/tenants`).
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// Check what can be checked without the pipelines: each route's condition and
    /// context. `item` is the item context of `signal` (`span`, `log`), if it has one.
    pub fn check(&self, item: Option<&str>) -> Result<(), ConfigError> {
        for (i, route) in self.config.table.iter().enumerate() {
            parse_route(route, i, item)?;
        }
        Ok(())
    }
}

fn parse_route(route: &Route, i: usize, item: Option<&str>) -> Result<Test, ConfigError> {
    let path = format!("table[{i}]");
    let text = match (&route.statement, &route.condition) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ConfigError::new(
                path,
                "a route has either a `statement` or a `condition`",
            ));
        }
        (Some(s), None) => {
            let rest = s.trim().strip_prefix("route()").ok_or_else(|| {
                ConfigError::new(
                    format!("{path}.statement"),
                    "a routing statement reads `route() where <condition>`",
                )
            })?;
            let rest = rest.trim();
            if rest.is_empty() {
                return Ok(Test::Always);
            }
            rest.strip_prefix("where")
                .map(str::trim)
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.statement"),
                        "a routing statement reads `route() where <condition>`",
                    )
                })?
                .to_string()
        }
        (None, Some(c)) => c.trim().to_string(),
    };
    let key = if route.statement.is_some() {
        "statement"
    } else {
        "condition"
    };
    let context = route.context.as_deref().unwrap_or("resource");
    let parse = |target| {
        Condition::parse_for(&text, target)
            .map_err(|e| ConfigError::new(format!("{path}.{key}"), format!("{e} in `{text}`")))
    };
    match context {
        "resource" => Ok(Test::Resource(parse(Target::Resource)?)),
        "request" => parse_request(&text)
            .ok_or_else(|| ConfigError::new(format!("{path}.{key}"), format!("a request condition reads `request[\"<metadata key>\"] == \"<value>\"` (or `!=`), not `{text}`"))),
        c if Some(c) == item => Ok(Test::Item(parse(if c == "span" {
            Target::Span
        } else {
            Target::Log
        })?)),
        "span" | "spanevent" | "log" | "metric" | "datapoint" => Err(ConfigError::new(
            format!("{path}.context"),
            format!("context `{context}` does not apply to this connector's signal, or is not supported here (resource and request are, and span for traces, log for logs)"),
        )),
        other => Err(ConfigError::new(
            format!("{path}.context"),
            format!("unknown context `{other}` (expected resource, span, log or request)"),
        )),
    }
}

/// `request["key"] == "value"` or `!=`.
fn parse_request(text: &str) -> Option<Test> {
    let rest = text.trim().strip_prefix("request[")?;
    let rest = rest.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    let key = rest[..end].to_string();
    let rest = rest[end + 1..].trim_start().strip_prefix(']')?.trim_start();
    let (equal, rest) = if let Some(r) = rest.strip_prefix("==") {
        (true, r)
    } else {
        (false, rest.strip_prefix("!=")?)
    };
    let value = rest
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')?
        .to_string();
    Some(Test::Request { key, value, equal })
}

/// A group split by destination: each part with its route (`None`: no route).
pub type Routed<G> = Result<Vec<(Option<usize>, G)>, EvalError>;

/// The signals the routing connector routes: how to take a request apart into its
/// resources and each resource into its items. Implemented for traces, metrics and logs.
#[allow(private_interfaces)]
pub trait Routable: Signal {
    /// One resource with its items (`ResourceSpans`).
    type Group: Clone + Send;
    /// The item context's name (`span`, `log`), if the signal has one here.
    const ITEM_CONTEXT: Option<&'static str>;
    /// Take the resources out of a request.
    fn groups(data: Self::Data) -> Vec<Self::Group>;
    /// A request of these resources.
    fn request(groups: Vec<Self::Group>) -> Self::Data;
    /// The resource of a group.
    fn resource(group: &Self::Group) -> Option<&Resource>;
    /// Items in a group.
    fn items(group: &Self::Group) -> usize;
    /// Split a group by each item's destination (`dest` returns the route index, or
    /// `None` for no route): one group per destination, holding its items.
    fn split(
        group: Self::Group,
        dest: &mut dyn FnMut(Cx<'_>) -> Result<Option<usize>, EvalError>,
    ) -> Routed<Self::Group>;
}

/// Group items by destination, keeping each destination's first-seen order.
fn by_dest<T>(items: Vec<(Option<usize>, T)>) -> Vec<(Option<usize>, Vec<T>)> {
    let mut out: Vec<(Option<usize>, Vec<T>)> = Vec::new();
    for (d, item) in items {
        match out.iter_mut().find(|(k, _)| *k == d) {
            Some((_, v)) => v.push(item),
            None => out.push((d, vec![item])),
        }
    }
    out
}

/// `Routable` for a signal whose resources hold scopes of items (spans, log records):
/// the same code over different field names.
macro_rules! routable_items {
    ($signal:ty, $group:ty, $context:literal, $groups:ident, $scopes:ident, $items:ident,
     |$item:ident, $resource:ident, $scope:ident| $item_ref:expr) => {
        #[allow(private_interfaces)]
        impl Routable for $signal {
            type Group = $group;
            const ITEM_CONTEXT: Option<&'static str> = Some($context);
            fn groups(data: Self::Data) -> Vec<$group> {
                data.$groups
            }
            fn request(groups: Vec<$group>) -> Self::Data {
                Self::Data { $groups: groups }
            }
            fn resource(group: &$group) -> Option<&Resource> {
                group.resource.as_ref()
            }
            fn items(group: &$group) -> usize {
                group.$scopes.iter().map(|s| s.$items.len()).sum()
            }
            fn split(
                mut group: $group,
                dest: &mut dyn FnMut(Cx<'_>) -> Result<Option<usize>, EvalError>,
            ) -> Routed<$group> {
                let mut out: Vec<(Option<usize>, $group)> = Vec::new();
                let scopes = std::mem::take(&mut group.$scopes);
                for mut scope in scopes {
                    let items = std::mem::take(&mut scope.$items);
                    let mut tagged = Vec::with_capacity(items.len());
                    for $item in items {
                        let ($resource, $scope) = (group.resource.as_ref(), scope.scope.as_ref());
                        let d = dest(item_cx($item_ref, $resource, $scope))?;
                        tagged.push((d, $item));
                    }
                    for (d, items) in by_dest(tagged) {
                        let mut s = scope.clone();
                        s.$items = items;
                        match out.iter_mut().find(|(k, _)| *k == d) {
                            Some((_, g)) => g.$scopes.push(s),
                            None => {
                                let mut g = group.clone();
                                g.$scopes = vec![s];
                                out.push((d, g));
                            }
                        }
                    }
                }
                Ok(out)
            }
        }
    };
}

routable_items!(
    Traces,
    ResourceSpans,
    "span",
    resource_spans,
    scope_spans,
    spans,
    |span, resource, scope| Item::Span(SpanContext {
        span: &span,
        event: None,
        resource,
        scope
    })
);
routable_items!(
    Logs,
    ResourceLogs,
    "log",
    resource_logs,
    scope_logs,
    log_records,
    |record, resource, scope| Item::Log(&record)
);

#[allow(private_interfaces)]
impl Routable for Metrics {
    type Group = ResourceMetrics;
    const ITEM_CONTEXT: Option<&'static str> = None;
    fn groups(data: Self::Data) -> Vec<ResourceMetrics> {
        data.resource_metrics
    }
    fn request(groups: Vec<ResourceMetrics>) -> Self::Data {
        Self::Data {
            resource_metrics: groups,
        }
    }
    fn resource(group: &ResourceMetrics) -> Option<&Resource> {
        group.resource.as_ref()
    }
    fn items(group: &ResourceMetrics) -> usize {
        Metrics::item_count(&Self::Data {
            resource_metrics: vec![group.clone()],
        })
    }
    fn split(
        group: ResourceMetrics,
        _dest: &mut dyn FnMut(Cx<'_>) -> Result<Option<usize>, EvalError>,
    ) -> Routed<ResourceMetrics> {
        // No item context for metrics here: `check` refuses one.
        Ok(vec![(None, group)])
    }
}

fn item_cx<'a>(
    item: Item<'a>,
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
) -> Cx<'a> {
    Cx {
        item,
        resource,
        scope,
    }
}

/// The consumer a [`Routing`] connector builds.
#[derive(Debug)]
pub struct RoutingConsumer<S: Signal> {
    routes: Arc<[CompiledRoute]>,
    defaults: Arc<[usize]>,
    heads: Downstream<S>,
    names: Vec<String>,
    error_mode: ErrorMode,
    telemetry: Arc<ComponentTelemetry>,
}

impl<S: Routable> RoutingConsumer<S> {
    /// Of the routes from `from` on, the first that holds. Without an item (`item`:
    /// `None`), a route that tests items stops the search: its index is returned, and
    /// each item of the resource is then routed from there.
    fn first_route(
        &self,
        from: usize,
        resource: Option<&Resource>,
        item: Option<&Cx<'_>>,
        client: Option<&ClientInfo>,
        errors: &mut usize,
    ) -> Result<Option<usize>, EvalError> {
        for (i, route) in self.routes.iter().enumerate().skip(from) {
            let holds = match (&route.test, item) {
                (Test::Always, _) => Ok(true),
                (Test::Item(_), None) => return Ok(Some(i)),
                (Test::Item(c), Some(cx)) => c.eval_in(cx),
                (Test::Request { key, value, equal }, _) => {
                    let v = client.and_then(|c| c.metadata(key));
                    Ok((v == Some(value.as_str())) == *equal)
                }
                (Test::Resource(c), _) => c.eval_in(&Cx {
                    item: Item::Resource,
                    resource,
                    scope: None,
                }),
            };
            match holds {
                Ok(true) => return Ok(Some(i)),
                Ok(false) => {}
                Err(e) => {
                    *errors += 1;
                    if self.error_mode == ErrorMode::Propagate {
                        return Err(e);
                    }
                }
            }
        }
        Ok(None)
    }

    fn pipelines_of(&self, dest: Option<usize>) -> &[usize] {
        match dest {
            Some(i) => &self.routes[i].pipelines,
            None => &self.defaults,
        }
    }
}

impl<S: Routable> Consumer<S> for RoutingConsumer<S> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        let n = batch.item_count();
        let client = batch.client.clone();
        let mut errors = 0usize;
        let mut per_pipeline: Vec<Vec<S::Group>> = vec![Vec::new(); self.names.len()];
        let mut unrouted = 0usize;
        let routed: Result<(), EvalError> = (|| {
            for group in S::groups(batch.into_data()) {
                let first =
                    self.first_route(0, S::resource(&group), None, client.as_deref(), &mut errors)?;
                let parts = match first {
                    Some(i) if matches!(self.routes[i].test, Test::Item(_)) => {
                        S::split(group, &mut |cx| {
                            self.first_route(
                                i,
                                cx.resource,
                                Some(&cx),
                                client.as_deref(),
                                &mut errors,
                            )
                        })?
                    }
                    d => vec![(d, group)],
                };
                for (dest, part) in parts {
                    let targets = self.pipelines_of(dest);
                    match targets {
                        [] => unrouted += S::items(&part),
                        [only] => per_pipeline[*only].push(part),
                        [rest @ .., last] => {
                            for p in rest {
                                per_pipeline[*p].push(part.clone());
                            }
                            per_pipeline[*last].push(part);
                        }
                    }
                }
            }
            Ok(())
        })();
        self.telemetry
            .add_failed_requests("condition_error", errors);
        if let Err(e) = routed {
            self.telemetry.add_dropped(DropReason::CONDITION_ERROR, n);
            return Err(ConsumeError::rejected(
                n,
                format!("routing condition failed: {e}"),
            ));
        }
        self.telemetry.add_dropped(UNROUTED, unrouted);
        let mut refused: Option<ConsumeError<S>> = None;
        for (i, groups) in per_pipeline.into_iter().enumerate() {
            if groups.is_empty() {
                continue;
            }
            let mut out = Batch::<S>::new(S::request(groups));
            out.client = client.clone();
            let items = out.item_count();
            let Some(head) = self.heads.get(&self.names[i]) else {
                continue;
            };
            match head.consume(out).await {
                Ok(()) => self.telemetry.add_sent(items),
                // What one pipeline refuses goes back to the caller, to be retried
                // (and routed again); what others took is theirs.
                Err(ConsumeError::Refused(r)) => match &mut refused {
                    Some(ConsumeError::Refused(prev)) => prev.batch.append(r.batch),
                    _ => refused = Some(ConsumeError::Refused(r)),
                },
                Err(e) => {
                    self.telemetry.add_send_failed(items);
                    if refused.is_none() {
                        refused = Some(e);
                    }
                }
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<S: Routable> Connector<S, S> for Routing {
    type Consumer = RoutingConsumer<S>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build(
        self,
        next: Downstream<S>,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<RoutingConsumer<S>, BuildError> {
        let names: Vec<String> = next.names().map(str::to_string).collect();
        let index = |path: String, name: &str| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                ctx.invalid(
                    path,
                    format!(
                        "pipeline `{name}` does not take this connector as a receiver (it feeds: {})",
                        names.join(", ")
                    ),
                )
            })
        };
        let mut routes = Vec::new();
        for (i, route) in self.config.table.iter().enumerate() {
            let test = parse_route(route, i, S::ITEM_CONTEXT)
                .map_err(|e| ctx.invalid(e.path, e.message))?;
            if route.pipelines.is_empty() {
                return Err(ctx.invalid(
                    format!("table[{i}].pipelines"),
                    "a route needs at least one pipeline",
                ));
            }
            let pipelines = route
                .pipelines
                .iter()
                .enumerate()
                .map(|(j, p)| index(format!("table[{i}].pipelines[{j}]"), p))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(CompiledRoute { test, pipelines });
        }
        let defaults = self
            .config
            .default_pipelines
            .iter()
            .enumerate()
            .map(|(j, p)| index(format!("default_pipelines[{j}]"), p))
            .collect::<Result<Vec<_>, _>>()?;
        if routes.is_empty() && defaults.is_empty() {
            return Err(ctx.invalid(
                "table",
                "a routing connector needs at least one route or a default pipeline",
            ));
        }
        Ok(RoutingConsumer {
            routes: routes.into(),
            defaults: defaults.into(),
            heads: next,
            names,
            error_mode: self.config.error_mode,
            telemetry: ctx.telemetry(),
        })
    }
}
