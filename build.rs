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
    detect(
        "python_sdk",
        "OTEL_PIPELINE_PYTHON",
        ".venv",
        "requirements.txt",
        "import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
    );
    // tests/legacy_clients.rs: Jaeger and Zipkin client libraries.
    detect(
        "python_legacy",
        "OTEL_PIPELINE_LEGACY_PYTHON",
        ".venv-legacy",
        "requirements-legacy.txt",
        "import opentelemetry.exporter.jaeger.thrift, py_zipkin",
    );
}

/// Set `cfg(name)` when the interpreter `env` names, or the repository's `venv`, imports
/// what `check` imports.
fn detect(name: &str, env: &str, venv: &str, requirements: &str, check: &str) {
    println!("cargo::rustc-check-cfg=cfg({name})");
    println!("cargo::rerun-if-env-changed={env}");
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_default();
    let python = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = dir.join(venv).join("bin/python");
            println!("cargo::rerun-if-changed={}", venv.display());
            if !dir.join("tests/python").join(requirements).is_file() || !venv.is_file() {
                // A dependent's build, or a checkout without the virtual environment.
                return;
            }
            venv
        }
    };
    println!("cargo::rerun-if-changed={}", python.display());
    let present = Command::new(&python)
        .args(["-c", check])
        .status()
        .is_ok_and(|s| s.success());
    if present {
        println!("cargo::rustc-cfg={name}");
    }
}
