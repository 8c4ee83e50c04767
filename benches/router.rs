//! The trace router's hash against a reimplementation of the Collector's `loadbalancing`
//! ring (crc32 IEEE, 36 000 positions, 100 virtual nodes per endpoint, the next position
//! clockwise), in one run:
//! - lookup time at 10, 100 and 300 endpoints (criterion);
//! - peak-to-mean load over 1 million random trace ids at 10, 50 and 300 endpoints, and
//!   the share of keys moved when one endpoint is added or removed, against the ideal
//!   1/n (printed before the timings: they are counts, not times);
//! - splitting a 500-span request across 10 endpoints, against prost decoding the same
//!   request (criterion, spans per second on one core).
//!
//! `cargo bench --bench router`

mod support;

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use otel_pipeline::exporters::loadbalancing::{Rendezvous, key_hash, split_by_trace_id};
use otel_pipeline::proto::collector::trace::v1::ExportTraceServiceRequest;
use otel_pipeline::testing::SplitMix64;
use prost::Message;

/// The Collector's ring, rebuilt from its description: each endpoint (in the resolver's
/// sorted order) takes up to 100 positions `crc32(endpoint ++ [i]) % 36000`, skipping
/// positions an earlier endpoint holds; a key goes to the first position at or after
/// `crc32(trace_id) % 36000`, wrapping around.
struct CollectorRing {
    positions: Vec<(u32, usize)>,
}

impl CollectorRing {
    fn new(endpoints: &[String]) -> Self {
        let mut taken = std::collections::HashSet::new();
        let mut positions = Vec::new();
        for (e, name) in endpoints.iter().enumerate() {
            for i in 0..100u8 {
                let mut h = crc32fast::Hasher::new();
                h.update(name.as_bytes());
                h.update(&[i]);
                let pos = h.finalize() % 36_000;
                if taken.insert(pos) {
                    positions.push((pos, e));
                }
            }
        }
        positions.sort_unstable();
        Self { positions }
    }

    fn owner(&self, trace_id: &[u8]) -> usize {
        let pos = crc32fast::hash(trace_id) % 36_000;
        let i = self.positions.partition_point(|(p, _)| *p < pos);
        self.positions.get(i).unwrap_or(&self.positions[0]).1
    }
}

fn endpoints(n: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.{}:4317", i / 65536 % 256, i / 256 % 256, i % 256))
        .collect();
    names.sort();
    names
}

fn trace_ids(n: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
            id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
            id
        })
        .collect()
}

fn peak_to_mean(owners: impl Iterator<Item = usize>, n: usize, keys: usize) -> f64 {
    let mut load = vec![0usize; n];
    for o in owners {
        load[o] += 1;
    }
    *load.iter().max().unwrap_or(&0) as f64 / (keys as f64 / n as f64)
}

/// Share of keys whose owner (by name) changes between two sets, over the ideal share.
fn moved_over_ideal(
    before: &[String],
    after: &[String],
    ids: &[[u8; 16]],
    owner_name: impl Fn(&[String], &[u8; 16]) -> String,
) -> f64 {
    let moved = ids
        .iter()
        .filter(|id| owner_name(before, id) != owner_name(after, id))
        .count() as f64
        / ids.len() as f64;
    let ideal = 1.0 / before.len().max(after.len()) as f64;
    moved / ideal
}

fn print_quality() {
    let ids = trace_ids(1_000_000, 1);
    eprintln!("router quality over 1 000 000 random trace ids (lower is better; ideal 1.00):");
    eprintln!(
        "  n    | peak/mean rendezvous | peak/mean ring | moved/ideal +1 rdv | ring  | moved/ideal -1 rdv | ring"
    );
    for n in [10, 50, 300] {
        let names = endpoints(n);
        let rdv = Rendezvous::new(&names);
        let ring = CollectorRing::new(&names);
        let p_rdv = peak_to_mean(ids.iter().map(|id| rdv.owner(key_hash(id))), n, ids.len());
        let p_ring = peak_to_mean(ids.iter().map(|id| ring.owner(id)), n, ids.len());
        let mut more = names.clone();
        more.push("10.255.255.255:4317".into());
        more.sort();
        let fewer: Vec<String> = names
            .iter()
            .filter(|e| **e != names[n / 2])
            .cloned()
            .collect();
        // Build each set once, not per key.
        let sets_rdv = |before: &[String], after: &[String]| {
            let (b, a) = (Rendezvous::new(before), Rendezvous::new(after));
            moved_over_ideal(before, after, &ids, |set, id| {
                let r = if set.len() == before.len() { &b } else { &a };
                r.names()[r.owner(key_hash(id))].clone()
            })
        };
        let sets_ring = |before: &[String], after: &[String]| {
            let (b, a) = (CollectorRing::new(before), CollectorRing::new(after));
            moved_over_ideal(before, after, &ids, |set, id| {
                if set.len() == before.len() {
                    before[b.owner(id)].clone()
                } else {
                    after[a.owner(id)].clone()
                }
            })
        };
        eprintln!(
            "  {n:<4} | {p_rdv:>20.3} | {p_ring:>14.3} | {:>18.3} | {:>5.3} | {:>18.3} | {:>5.3}",
            sets_rdv(&names, &more),
            sets_ring(&names, &more),
            sets_rdv(&names, &fewer),
            sets_ring(&names, &fewer),
        );
    }
}

fn bench(c: &mut Criterion) {
    print_quality();

    let ids = trace_ids(4096, 2);
    let mut g = c.benchmark_group("router/lookup");
    g.throughput(Throughput::Elements(ids.len() as u64));
    for n in [10, 100, 300] {
        let names = endpoints(n);
        let rdv = Rendezvous::new(&names);
        let ring = CollectorRing::new(&names);
        g.bench_with_input(BenchmarkId::new("rendezvous", n), &ids, |b, ids| {
            b.iter(|| {
                let mut acc = 0usize;
                for id in ids {
                    acc = acc.wrapping_add(rdv.owner(key_hash(black_box(id))));
                }
                acc
            })
        });
        g.bench_with_input(BenchmarkId::new("collector_ring", n), &ids, |b, ids| {
            b.iter(|| {
                let mut acc = 0usize;
                for id in ids {
                    acc = acc.wrapping_add(ring.owner(black_box(id)));
                }
                acc
            })
        });
    }
    g.finish();

    // A 500-span request of rich spans (20 attributes, 10 spans per trace).
    let request: ExportTraceServiceRequest = support::spans_with_20_attributes(500);
    let bytes = request.encode_to_vec();
    let set = Rendezvous::new(endpoints(10));
    let mut g = c.benchmark_group("router/split_500_spans");
    g.throughput(Throughput::Elements(500));
    g.bench_function("split_across_10_endpoints", |b| {
        b.iter_batched(
            || request.clone(),
            |data| split_by_trace_id(data, &set),
            BatchSize::LargeInput,
        )
    });
    // Both drop their output outside the timing, as a receiver hands it on.
    g.bench_function("prost_decode", |b| {
        b.iter_batched(
            || (),
            |()| ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).expect("decodes"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
