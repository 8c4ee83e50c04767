//! # otel-k8s
//!
//! Kubernetes metadata for otel-pipeline:
//! - [`PodMetadataCache`]: compact pod records indexed by pod IP, UID and container ID,
//!   fed by a list/watch of the API server (`kube`'s watcher: resumes from its
//!   resourceVersion, re-lists on `410 Gone`, bookmarks on);
//! - [`K8sAttributes`]: the `k8sattributes` processor, configured in the Collector's shape;
//! - [`K8sResolver`]: the trace router's resolver of a Service's ready endpoints, from its
//!   EndpointSlices (`resolver.k8s` in the `loadbalancing` exporter).
//!
//! This crate has no feature flags; it builds `kube` with rustls and `k8s-openapi` for
//! Kubernetes 1.33 (`v1_33`), whose API it reads.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
pub mod collector;
pub mod config;
mod processor;
mod resolver;

pub use cache::{
    ContainerId, ContainerSpec, Keep, Owner, Pairs, PodMetadataCache, PodRecord, PodUid,
};
pub use config::K8sAttributesConfig;
pub use processor::{K8sAttributes, K8sAttributesConsumer};
pub use resolver::K8sResolver;
