//! # otel-k8s
//!
//! Kubernetes support for otel-pipeline. Planned here (see `docs/architecture.md`): the pod
//! metadata cache, the `k8sattributes` processor and the k8s endpoint resolver for the
//! trace router. This crate has no components yet.
