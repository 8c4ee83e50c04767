//! Detects whether the Python side of `tests/python_sdk.rs` is installed, so that test is
//! run when it is and reported as ignored (not passed) when it is not.
//!
//! `.ci/run` installs Python's `opentelemetry-sdk` into `.venv` before it builds;
//! `OTEL_PIPELINE_PYTHON` names another interpreter.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(python_sdk)");
    println!("cargo::rerun-if-env-changed=OTEL_PIPELINE_PYTHON");
    let python = std::env::var_os("OTEL_PIPELINE_PYTHON").map_or_else(
        || {
            let dir = std::env::var_os("CARGO_MANIFEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_default();
            dir.join(".venv/bin/python")
        },
        PathBuf::from,
    );
    println!("cargo::rerun-if-changed={}", python.display());
    let present = Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if present {
        println!("cargo::rustc-cfg=python_sdk");
    }
}
