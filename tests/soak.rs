//! The soak, shortened for CI: `examples/soak.rs` runs the shipped gateway configuration
//! under sustained load over OTLP on loopback and fails if memory grows after warm-up, an
//! error trace is lost, or a stage's counters do not balance. The long form is in
//! docs/reliability.md.

use std::process::Command;

#[test]
fn the_gateway_soaks_without_growth_or_loss() {
    let exe = std::env::current_exe().expect("test path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("soak"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (it builds examples) or `cargo build --example soak`",
        bin.display()
    );
    let out = Command::new(&bin)
        .args(["--seconds", "8", "--rate", "5000", "--warmup-share", "0.5"])
        .output()
        .expect("the soak runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("soak: ok"), "{stdout}");
}
