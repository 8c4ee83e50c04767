//! The Collector's own processor testdata (`../shared/collector-testdata`, where it exists)
//! through our loader: every section must give what `tests/collector_testdata.tsv` says.

use std::path::{Path, PathBuf};

use otel_pipeline::collector::{CollectorConfig, ConfigFile};

fn testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/collector-testdata");
    dir.is_dir().then_some(dir)
}

/// The processor type a file's sections belong to, for files that hold one bare config.
fn bare_kind(path: &str) -> Option<&'static str> {
    if path.contains("memorylimiter") {
        Some("memory_limiter")
    } else if path.contains("batchprocessor") {
        Some("batch")
    } else {
        None
    }
}

/// Every processor section: `(file, id, yaml text of the section)`.
fn sections(root: &Path) -> Vec<(String, String, serde_yaml_ng::Value)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .expect("below root")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).expect("readable");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        match bare_kind(&rel) {
            Some(kind) => out.push((rel, kind.to_string(), doc)),
            None => {
                let procs = doc.get("processors").cloned().unwrap_or(doc);
                if let serde_yaml_ng::Value::Mapping(m) = procs {
                    for (k, v) in m {
                        out.push((rel.clone(), k.as_str().unwrap_or_default().to_string(), v));
                    }
                }
            }
        }
    }
    out
}

/// Load one section as a processor in a pipeline of each signal: `Ok` when some
/// signal's pipeline takes it (a section with log properties is for logs pipelines), else
/// the traces pipeline's first error (the tail sampler serves traces only).
fn outcome(id: &str, section: &serde_yaml_ng::Value) -> Result<(), String> {
    let mut first = None;
    for signal in ["traces", "metrics", "logs"] {
        match outcome_in(signal, id, section) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_default())
}

fn outcome_in(signal: &str, id: &str, section: &serde_yaml_ng::Value) -> Result<(), String> {
    let mut procs = serde_yaml_ng::Mapping::new();
    procs.insert(id.into(), section.clone());
    let mut doc = serde_yaml_ng::Mapping::new();
    doc.insert("processors".into(), serde_yaml_ng::Value::Mapping(procs));
    let text = format!(
        "{}receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\nexporters:\n  debug:\nservice:\n  pipelines:\n    {signal}:\n      receivers: [otlp]\n      processors: [{id}]\n      exporters: [debug]\n",
        serde_yaml_ng::to_string(&serde_yaml_ng::Value::Mapping(doc)).expect("yaml")
    );
    CollectorConfig::load(
        &[ConfigFile::new("t.yaml", text)],
        |_| None,
        &otel_pipeline::default_registry(),
    )
    .map(drop)
    .map_err(|e| {
        let first = &e.errors[0];
        format!("{}: {}", first.path, first.message)
    })
}

/// One row of `tests/collector_testdata.tsv`.
struct Expect {
    file: String,
    section: String,
    outcome: String,
    path: String,
}

fn table() -> Vec<Expect> {
    include_str!("collector_testdata.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Expect {
                file: f[0].into(),
                section: f[1].into(),
                outcome: f[2].into(),
                path: f[3].into(),
            }
        })
        .collect()
}

#[test]
fn the_collectors_own_processor_sections_give_what_the_table_says() {
    let Some(root) = testdata() else {
        println!("../shared/collector-testdata is not beside this clone: nothing to walk");
        return;
    };
    let table = table();
    let found = sections(&root);
    let mut failures = Vec::new();
    for (file, id, section) in &found {
        let Some(row) = table.iter().find(|r| r.file == *file && r.section == *id) else {
            failures.push(format!("{file} {id}: not in tests/collector_testdata.tsv"));
            continue;
        };
        match (row.outcome.as_str(), outcome(id, section)) {
            ("ok", Ok(())) => {}
            ("ok", Err(e)) => failures.push(format!("{file} {id}: should load, got {e}")),
            (_, Ok(())) => {
                failures.push(format!("{file} {id}: should fail at {}, loaded", row.path))
            }
            (kind, Err(e)) => {
                if !e.starts_with(&row.path) {
                    failures.push(format!("{file} {id}: should fail at {}, got {e}", row.path));
                }
                if kind == "unsupported" && !e.contains("not supported") {
                    failures.push(format!(
                        "{file} {id}: should say it is not supported, got {e}"
                    ));
                }
            }
        }
    }
    for row in &table {
        if !found
            .iter()
            .any(|(f, id, _)| *f == row.file && *id == row.section)
        {
            failures.push(format!(
                "{} {}: in the table, not in the testdata",
                row.file, row.section
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let ok = table.iter().filter(|r| r.outcome == "ok").count();
    println!(
        "{} sections: {ok} load, the rest fail with their path",
        found.len()
    );
}
