//! # otel-k8s
//!
//! Kubernetes metadata for otel-pipeline:
//! - [`PodMetadataCache`]: compact pod records indexed by pod IP, UID and container ID,
//!   fed by a list/watch of the API server (`kube`'s watcher: resumes from its
//!   resourceVersion, re-lists on `410 Gone`, bookmarks on);
//! - [`K8sAttributes`]: the `k8sattributes` processor, configured in the Collector's shape.
//!
//! The Kubernetes resolver for the trace router is planned.

mod cache;
pub mod collector;
pub mod config;
mod processor;

pub use cache::{ContainerRecord, Keep, Owner, PodMetadataCache, PodRecord};
pub use config::K8sAttributesConfig;
pub use processor::{K8sAttributes, K8sAttributesConsumer};
