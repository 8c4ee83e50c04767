//! Configurations written by others for trace pipelines (`../shared/real-configs`, where
//! it exists beside this clone; their sources are in its `manifest.tsv`): each is loaded
//! as `collector --validate` loads it, unchanged and in its traces-only variant, and the
//! outcome must be the one `tests/real_configs.tsv` records: `ok`, or refused with every
//! error naming a component this build does not include (or a setting), never a crash or
//! an unexplained error. A config that starts loading, or stops, fails the test until the
//! table says so.

use std::collections::BTreeMap;
use std::path::Path;

use otel_pipeline::collector::{CollectorConfig, ConfigFile};

/// `export A=x B=y` lines of `env.sh`; `$(mktemp -d)` becomes a fresh directory.
fn env_of(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tmp = std::env::temp_dir().join("real-configs-storage");
    let _ = std::fs::create_dir_all(&tmp);
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        for pair in rest.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                let v = if v.starts_with("$(") {
                    tmp.display().to_string()
                } else {
                    v.to_string()
                };
                env.insert(k.to_string(), v);
            }
        }
    }
    env
}

/// `ok`, or `refused: <the kinds of error>`.
fn outcome(files: &[ConfigFile], env: &BTreeMap<String, String>) -> (String, Vec<String>) {
    match CollectorConfig::load(
        files,
        |k| env.get(k).cloned(),
        &otel_pipeline::default_registry(),
    ) {
        Ok(_) => ("ok".into(), Vec::new()),
        Err(e) => (
            "refused".into(),
            e.errors.iter().map(ToString::to_string).collect(),
        ),
    }
}

/// Whether an error says what is missing or wrong in terms a user can act on.
fn named(message: &str) -> bool {
    [
        "that this build does not include",
        "unknown receiver type",
        "unknown processor type",
        "unknown exporter type",
        "unknown extension type",
        "unknown connector type",
        "is used here but not defined",
        "does not send",
        "does not take",
        "does not exist",
        "unknown signal",
        "unknown key",
        "is a receiver of this",
        "is an exporter of this",
        "only a pull reader",
        "a pipeline needs at least one",
    ]
    .iter()
    .any(|n| message.contains(n))
}

#[test]
fn real_configurations_load_or_name_what_they_lack() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/real-configs");
    if !dir.is_dir() {
        println!("../shared/real-configs is not beside this clone: nothing to load");
        return;
    }
    let env = env_of(&dir.join("env.sh"));
    let table = include_str!("real_configs.tsv");
    let expected: BTreeMap<&str, (&str, &str)> = table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut cols = l.split('\t');
            Some((cols.next()?, (cols.next()?, cols.next()?)))
        })
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    names.sort();
    let mut mismatches = Vec::new();
    let (mut unchanged, mut traces_only) = (0, 0);
    let mut report = String::new();
    for name in &names {
        let mut files = vec![ConfigFile::read(dir.join(name)).expect("readable")];
        let overlay = dir.join(
            name.replace(".yaml", "").replace(
                "01-otel-demo-current",
                "01b-otel-demo-current-observability-overlay",
            ) + ".yaml.part",
        );
        if name.starts_with("01-") && overlay.exists() {
            files.push(ConfigFile::read(&overlay).expect("readable"));
        }
        let (full, errors) = outcome(&files, &env);
        let variant = dir.join("traces-only").join(name);
        let (traces, t_errors) = if variant.exists() {
            outcome(&[ConfigFile::read(&variant).expect("readable")], &env)
        } else {
            ("absent".into(), Vec::new())
        };
        unchanged += usize::from(full == "ok");
        traces_only += usize::from(traces == "ok");
        for e in errors.iter().chain(&t_errors) {
            if !named(e) {
                mismatches.push(format!("{name}: an error that names nothing: {e}"));
            }
        }
        let first = |errs: &[String]| errs.first().cloned().unwrap_or_default();
        report.push_str(&format!(
            "{name}\t{full}\t{traces}\t{}\n",
            first(&errors).chars().take(140).collect::<String>()
        ));
        match expected.get(name.as_str()) {
            Some((f, t)) if *f == full && *t == traces => {}
            Some((f, t)) => mismatches.push(format!(
                "{name}: expected {f}/{t}, got {full}/{traces} ({})",
                first(&errors)
            )),
            None => mismatches.push(format!("{name}: not in tests/real_configs.tsv")),
        }
    }
    println!(
        "{report}unchanged: {unchanged}/{}; traces-only: {traces_only}/{}",
        names.len(),
        names.len()
    );
    assert!(
        mismatches.is_empty(),
        "{}\n\n{report}",
        mismatches.join("\n")
    );
}
