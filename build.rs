//! Detects whether the Python side of `tests/python_sdk.rs` is installed, so that test is
//! run when it is and reported as ignored (not passed) when it is not.
//!
//! It runs nothing in a build that depends on this crate: it looks for Python only where
//! `OTEL_PIPELINE_PYTHON` names an interpreter
//! or where this repository's own `.venv` (made by `.ci/run`) exists beside `tests/python/`, which the
//! published crate excludes.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(python_sdk)");
    println!("cargo::rerun-if-env-changed=OTEL_PIPELINE_PYTHON");
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let python = match std::env::var_os("OTEL_PIPELINE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = dir.join(".venv/bin/python");
            println!("cargo::rerun-if-changed={}", venv.display());
            if !dir.join("tests/python/requirements.txt").is_file() || !venv.is_file() {
                // A dependent's build, or a checkout without the virtual environment.
                return;
            }
            venv
        }
    };
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
