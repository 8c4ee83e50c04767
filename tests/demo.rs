//! The README's first command: `cargo run --example demo` must end with every promise held
//! (exit 0) and print its summary table.

#[test]
fn the_demo_keeps_every_promise() {
    let exe = std::env::current_exe().expect("test path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("demo"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds examples",
        bin.display()
    );
    let out = std::process::Command::new(&bin)
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "traces split across gateways (must be 0)",
        "error traces lost (must be 0)",
        "broken parent links, B3/W3C and queue (must be 0)",
        "every promise held",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}

/// `cargo run --example service_embed`: the SDK's spans are tail-sampled in process and
/// only what is kept goes out over OTLP; it checks its own promises and exits non-zero
/// when one fails.
#[test]
fn the_service_embed_example_keeps_errors_and_secrets_in() {
    let exe = std::env::current_exe().expect("test path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("service_embed"))
        .expect("target dir");
    let out = std::process::Command::new(&bin)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(10 errors; e-mails: 0)"), "{stdout}");
}
