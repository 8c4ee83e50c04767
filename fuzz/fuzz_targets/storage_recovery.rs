//! The storage log's recovery on any bytes: the input is cut into up to three segment
//! files (the first two bytes say where), then the log opens them. Opening never panics
//! or loops; every record it recovers reads back; appends work after it; the read-only
//! inspection agrees on what is held.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use otel_pipeline_core::storage::{Fsync, LogOptions, SegmentLog, Store, inspect};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let base = std::path::Path::new("/dev/shm");
    let root = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
    let dir = root.join(format!(
        "otel-fuzz-storage-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let body = &data[2..];
    let a = (data[0] as usize * body.len()) / 256;
    let b = a + ((data[1] as usize * (body.len() - a)) / 256);
    for (n, part) in [&body[..a], &body[a..b], &body[b..]].into_iter().enumerate() {
        std::fs::write(dir.join(format!("{:010}.seg", n + 1)), part).expect("write");
    }
    let options = LogOptions {
        fsync: Fsync::Never,
        max_record_bytes: 1 << 20,
        segment_bytes: 4096,
        ..LogOptions::default()
    };
    let held_before = inspect(&dir, 1 << 20).expect("inspect").held();
    let log = SegmentLog::open(&dir, options).expect("opens");
    let recovered = log.recovered();
    assert_eq!(recovered.len() as u64, held_before, "open and inspect agree");
    for (id, kind) in &recovered {
        let r = log.read(*id).expect("a recovered record reads back");
        assert_eq!(r.kind, *kind);
    }
    let a = log.append(1, &[b"after"]).expect("appends after recovery");
    assert_eq!(log.read(a.id).expect("reads").payload, b"after");
    log.release(&recovered.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
});
