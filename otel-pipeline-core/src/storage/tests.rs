use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "otel-storage-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn options() -> LogOptions {
    LogOptions {
        fsync: Fsync::Never,
        segment_bytes: 4096,
        ..LogOptions::default()
    }
}

fn payloads(log: &SegmentLog) -> Vec<Vec<u8>> {
    log.recovered()
        .into_iter()
        .map(|(id, _)| log.read(id).unwrap().payload)
        .collect()
}

fn segment_files(d: &Path) -> Vec<PathBuf> {
    segment_numbers(d)
        .unwrap()
        .into_iter()
        .map(|n| segment_path(d, n))
        .collect()
}

#[test]
fn what_is_not_released_comes_back_in_order_across_segments() {
    let d = dir("order");
    let log = SegmentLog::open(&d, options()).unwrap();
    let mut ids = Vec::new();
    for i in 0..100u32 {
        let body = vec![i as u8; 300];
        ids.push(log.append(1, &[&i.to_le_bytes(), &body]).unwrap().id);
    }
    assert!(segment_files(&d).len() > 3, "small segments roll");
    log.release(&ids[..50]);
    drop(log);
    let log = SegmentLog::open(&d, options()).unwrap();
    let back = payloads(&log);
    assert_eq!(back.len(), 50);
    for (i, p) in back.iter().enumerate() {
        assert_eq!(
            u32::from_le_bytes(p[..4].try_into().unwrap()),
            50 + i as u32
        );
        assert_eq!(p.len(), 304);
    }
    assert_eq!(log.stats().recovered_records.load(Ordering::Relaxed), 50);
    assert_eq!(log.stats().torn_records.load(Ordering::Relaxed), 0);
}

#[test]
fn disk_use_shrinks_as_records_are_released() {
    let d = dir("shrink");
    let log = SegmentLog::open(&d, options()).unwrap();
    let ids: Vec<_> = (0..200)
        .map(|_| log.append(1, &[&[7u8; 500]]).unwrap().id)
        .collect();
    let full = log.stats().disk_bytes.load(Ordering::Relaxed);
    assert!(full > 100_000);
    log.release(&ids[..100]);
    let half = log.stats().disk_bytes.load(Ordering::Relaxed);
    assert!(half < full * 6 / 10, "{half} of {full}");
    log.release(&ids[100..]);
    let none = log.stats().disk_bytes.load(Ordering::Relaxed);
    assert!(
        none < 64 << 10,
        "everything released leaves at most a small active segment: {none}"
    );
    assert_eq!(log.stats().held_records.load(Ordering::Relaxed), 0);
    drop(log);
    let log = SegmentLog::open(&d, options()).unwrap();
    assert!(log.recovered().is_empty());
}

#[test]
fn a_torn_last_record_is_truncated_and_counted_and_appends_continue() {
    let d = dir("torn");
    let log = SegmentLog::open(&d, options()).unwrap();
    for i in 0..3u8 {
        log.append(1, &[&[i; 100]]).unwrap();
    }
    drop(log);
    let last = segment_files(&d).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Every cut inside the last record: a kill mid-write.
    for cut in [1, 10, 15, 16, 17, 60, 115] {
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(len - cut).unwrap();
        drop(f);
        let copy = dir(&format!("torn-{cut}"));
        for p in segment_files(&d) {
            fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
        let log = SegmentLog::open(&copy, options()).unwrap();
        assert_eq!(
            payloads(&log),
            vec![vec![0u8; 100], vec![1u8; 100]],
            "cut {cut}"
        );
        assert_eq!(log.stats().torn_records.load(Ordering::Relaxed), 1);
        assert_eq!(log.stats().corrupt_records.load(Ordering::Relaxed), 0);
        log.append(1, &[b"after"]).unwrap();
        drop(log);
        let log = SegmentLog::open(&copy, options()).unwrap();
        let back = payloads(&log);
        assert_eq!(back.len(), 3);
        assert_eq!(back[2], b"after");
        assert_eq!(log.stats().torn_records.load(Ordering::Relaxed), 0);
        // Put the full file back for the next cut.
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(len).unwrap();
    }
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_counted() {
    // Flip one byte anywhere in record 2 of 5: header, length, checksum or payload.
    for at in [0usize, 2, 5, 7, 9, 12, 16, 50, 115] {
        let d = dir(&format!("corrupt-{at}"));
        let log = SegmentLog::open(
            &d,
            LogOptions {
                segment_bytes: 1 << 20,
                ..options()
            },
        )
        .unwrap();
        let ids: Vec<_> = (0..5u8)
            .map(|i| log.append(1, &[&[i; 100]]).unwrap().id)
            .collect();
        drop(log);
        let path = segment_path(&d, ids[2].segment());
        let mut bytes = fs::read(&path).unwrap();
        bytes[ids[2].offset() as usize + at] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        let log = SegmentLog::open(&d, options()).unwrap();
        let back = payloads(&log);
        assert_eq!(
            back,
            vec![vec![0u8; 100], vec![1; 100], vec![3; 100], vec![4; 100]],
            "byte {at}"
        );
        assert_eq!(
            log.stats().corrupt_records.load(Ordering::Relaxed),
            1,
            "byte {at}"
        );
        assert_eq!(log.stats().torn_records.load(Ordering::Relaxed), 0);
        let report = inspect(&d, 1 << 20).unwrap();
        assert_eq!(report.corrupt(), 1);
        assert_eq!(report.held(), 4);
    }
}

#[test]
fn garbage_segments_never_panic_or_loop() {
    let d = dir("garbage");
    // Random bytes, magic bytes with absurd lengths, zeros: as a sealed and a last segment.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = vec![0u8; 200_000];
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    for chunk in noise.chunks_mut(997) {
        chunk[..4].copy_from_slice(&MAGIC);
        chunk[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    fs::write(segment_path(&d, 1), &noise).unwrap();
    fs::write(segment_path(&d, 2), vec![0u8; 50_000]).unwrap();
    let log = SegmentLog::open(&d, options()).unwrap();
    assert!(log.recovered().is_empty());
    let s = log.stats();
    assert_eq!(
        s.corrupt_records.load(Ordering::Relaxed),
        1,
        "the sealed garbage segment"
    );
    assert_eq!(
        s.torn_records.load(Ordering::Relaxed),
        1,
        "the zeros at the end"
    );
    log.append(1, &[b"still works"]).unwrap();
}

#[test]
fn max_bytes_refuses_retryably_and_room_comes_back() {
    let d = dir("full");
    let log = SegmentLog::open(
        &d,
        LogOptions {
            max_bytes: 20_000,
            ..options()
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    let err = loop {
        match log.append(1, &[&[1u8; 1000]]) {
            Ok(a) => ids.push(a.id),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, StorageError::Full(_)) && err.is_retryable(),
        "{err}"
    );
    assert!(log.stats().disk_bytes.load(Ordering::Relaxed) <= 20_000);
    assert_eq!(log.stats().full_refusals.load(Ordering::Relaxed), 1);
    log.release(&ids);
    log.append(1, &[&[2u8; 1000]]).unwrap();
    assert!(matches!(
        log.append(1, &[&vec![0u8; 100 << 20]]),
        Err(StorageError::TooLarge { .. })
    ));
}

#[cfg(unix)]
#[test]
fn a_full_disk_refuses_retryably_and_leaves_the_log_readable() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let d = dir("enospc");
    let log = SegmentLog::open(&d, options()).unwrap();
    let first = log.append(1, &[&[1u8; 3000]]).unwrap();
    // The next segment is a device that answers every write with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", segment_path(&d, first.id.segment() + 1)).unwrap();
    let err = log.append(1, &[&[2u8; 3000]]).unwrap_err();
    assert!(
        matches!(err, StorageError::Full(_)) && err.is_retryable(),
        "{err}"
    );
    drop(log);
    fs::remove_file(segment_path(&d, first.id.segment() + 1)).unwrap();
    let log = SegmentLog::open(&d, options()).unwrap();
    assert_eq!(payloads(&log), vec![vec![1u8; 3000]]);
}

#[test]
fn a_second_owner_is_kept_out() {
    let d = dir("lock");
    let _log = SegmentLog::open(&d, options()).unwrap();
    let err = SegmentLog::open(
        &d,
        LogOptions {
            lock_timeout: Duration::from_millis(50),
            ..options()
        },
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::Locked(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_waits_for_a_sync_that_concurrent_appends_share() {
    let d = dir("group");
    let log = SegmentLog::open_shared(
        &d,
        LogOptions {
            fsync: Fsync::EveryWrite,
            segment_bytes: 1 << 20,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let a = log.append(1, &[&[t; 2000]]).unwrap();
                log.durable(a).await.unwrap();
                assert!(*log.synced.borrow() >= a.seq);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let syncs = log.stats().syncs.load(Ordering::Relaxed);
    assert!((1..320).contains(&syncs), "{syncs} syncs for 320 appends");
    log.close().unwrap();
}

#[tokio::test]
async fn release_records_past_max_bytes_still_make_room() {
    let d = dir("release-room");
    let log = SegmentLog::open(
        &d,
        LogOptions {
            max_bytes: 8192,
            ..options()
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    while let Ok(a) = log.append(1, &[&[0u8; 500]]) {
        ids.push(a.id);
    }
    for id in &ids {
        log.release(&[*id]);
    }
    assert!(log.append(1, &[&[0u8; 500]]).is_ok());
    drop(log);
    let log = SegmentLog::open(&d, options()).unwrap();
    assert_eq!(log.recovered().len(), 1);
}
