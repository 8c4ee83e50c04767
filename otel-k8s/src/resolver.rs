//! The trace router's Kubernetes resolver: the ready endpoints of a Service, from its
//! EndpointSlices, pushed to the router as they change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use otel_exporters::loadbalancing::{Resolver, ResolverUpdates};
use otel_pipeline_core::BoxFuture;

/// Follows the EndpointSlices of Service `name` in `namespace` (the Collector's
/// `resolver.k8s.service: name.namespace`): every ready endpoint address, once per port.
/// Endpoints that are not ready, or terminating, are left out; the router drains them.
///
/// ```
/// use otel_k8s::K8sResolver;
/// let r = K8sResolver::new("otel-gateway.observability", vec![4317]);
/// assert_eq!(r.service(), ("otel-gateway", "observability"));
/// ```
#[derive(Clone)]
pub struct K8sResolver {
    name: String,
    namespace: String,
    ports: Vec<u16>,
    client: Option<kube::Client>,
}

impl std::fmt::Debug for K8sResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sResolver")
            .field("service", &self.name)
            .field("namespace", &self.namespace)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl K8sResolver {
    /// Resolve `service` (`name.namespace`, or `name` in the `default` namespace) on
    /// `ports`. The client is made in-cluster (or from the kubeconfig) when it runs.
    pub fn new(service: &str, ports: Vec<u16>) -> Self {
        let (name, namespace) = match service.split_once('.') {
            Some((n, ns)) => (
                n.to_string(),
                ns.split('.').next().unwrap_or(ns).to_string(),
            ),
            None => (service.to_string(), "default".to_string()),
        };
        Self {
            name,
            namespace,
            ports,
            client: None,
        }
    }

    /// Use this client.
    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The Service's name and namespace.
    pub fn service(&self) -> (&str, &str) {
        (&self.name, &self.namespace)
    }

    /// The endpoints of a set of slices: ready addresses times ports, `host:port`.
    fn endpoints(&self, slices: &BTreeMap<String, EndpointSlice>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for slice in slices.values() {
            for ep in &slice.endpoints {
                let c = ep.conditions.as_ref();
                // An unset `ready` means ready; terminating endpoints are not.
                let ready = c.and_then(|c| c.ready).unwrap_or(true)
                    && !c.and_then(|c| c.terminating).unwrap_or(false);
                if !ready {
                    continue;
                }
                for addr in &ep.addresses {
                    for port in &self.ports {
                        if addr.contains(':') {
                            out.insert(format!("[{addr}]:{port}"));
                        } else {
                            out.insert(format!("{addr}:{port}"));
                        }
                    }
                }
            }
        }
        out
    }
}

impl Resolver for K8sResolver {
    fn kind(&self) -> &'static str {
        "k8s"
    }

    fn run(self: Arc<Self>, updates: ResolverUpdates) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let client = loop {
                match &self.client {
                    Some(c) => break c.clone(),
                    None => match kube::Client::try_default().await {
                        Ok(c) => break c,
                        Err(e) => {
                            updates.failed(&format!("no Kubernetes client: {e}"));
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    },
                }
            };
            let api: Api<EndpointSlice> = Api::namespaced(client, &self.namespace);
            let cfg = watcher::Config::default()
                .labels(&format!("kubernetes.io/service-name={}", self.name));
            let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
            let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
            let mut listing: Option<BTreeMap<String, EndpointSlice>> = None;
            while let Some(event) = stream.next().await {
                match event {
                    Err(e) => {
                        updates.failed(&e.to_string());
                        continue;
                    }
                    Ok(Event::Init) => {
                        listing = Some(BTreeMap::new());
                        continue;
                    }
                    Ok(Event::InitApply(s)) => {
                        if let (Some(l), Some(n)) = (listing.as_mut(), s.metadata.name.clone()) {
                            l.insert(n, s);
                        }
                        continue;
                    }
                    Ok(Event::InitDone) => {
                        if let Some(l) = listing.take() {
                            slices = l;
                        }
                    }
                    Ok(Event::Apply(s)) => {
                        if let Some(n) = s.metadata.name.clone() {
                            slices.insert(n, s);
                        }
                    }
                    Ok(Event::Delete(s)) => {
                        if let Some(n) = &s.metadata.name {
                            slices.remove(n);
                        }
                    }
                }
                updates.publish(self.endpoints(&slices));
            }
        })
    }
}
