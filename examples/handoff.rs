//! What a gateway's hand-off costs at drain: one gateway holds `--traces` undecided traces
//! (the seed's 10-span traces with HTTP attributes) and shuts down; its tail sampler hands
//! them over OTLP/gRPC on loopback to two peer gateways, each an OTLP receiver and a tail
//! sampler. Prints the traces, spans and bytes moved, how long the shutdown took, and
//! checks that the peers received every trace.
//!
//! ```text
//! cargo run --release --example handoff -- --traces 50000 --runs 3
//! ```

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use otel_pipeline::config::from_yaml;
use otel_pipeline::exporters::loadbalancing::{TraceRouter, TraceRouterConfig};
use otel_pipeline::exporters::nop::NopExporter;
use otel_pipeline::processors::tail_sampling::{
    TailSampler, TailSamplingConfig, TailSamplingHandle,
};
use otel_pipeline::receivers::{OtlpConfig, OtlpReceiver};
use otel_pipeline::testing::generate_traces;
use otel_pipeline::{DirectReceiver, Pipeline, RunningPipeline};

fn sampler() -> TailSampler {
    // Nothing is decided during the run: every trace is still buffered at the drain.
    let config: TailSamplingConfig = from_yaml(
        "tail_sampling",
        "decision_wait: 600s\nnum_traces: 1000000\n\
         policies: [{ name: rest, type: probabilistic, probabilistic: { sampling_percentage: 10 } }]",
    )
    .expect("sampler config");
    TailSampler::new(config)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

async fn peer(addr: SocketAddr) -> (RunningPipeline, TailSamplingHandle) {
    let otlp = OtlpReceiver::new(OtlpConfig {
        grpc: Some(addr),
        http: None,
        ..OtlpConfig::loopback()
    });
    let sampler = sampler();
    let handle = sampler.handle();
    let running = Pipeline::traces()
        .receiver(otlp.traces())
        .processor(sampler)
        .exporter(NopExporter::new())
        .build()
        .expect("peer builds")
        .start()
        .await
        .expect("peer starts");
    (running, handle)
}

async fn run(traces: usize) -> Result<(), String> {
    let me = free_addr();
    let peers = [free_addr(), free_addr()];
    let mut running_peers = Vec::new();
    for p in peers {
        running_peers.push(peer(p).await);
    }
    let yaml = format!(
        "protocol: {{ otlp: {{ tls: {{ insecure: true }}, sending_queue: {{ enabled: false }} }} }}\n\
         resolver: {{ static: {{ hostnames: [{me}, {}, {}] }} }}\nexclude_endpoints: [{me}]\n",
        peers[0], peers[1]
    );
    let router = TraceRouter::new(
        TraceRouterConfig::from_yaml("exporters.loadbalancing/peers", &yaml)
            .map_err(|e| e.to_string())?,
    );
    let sampler = sampler().with_handoff(router);
    let handle = sampler.handle();
    let (receiver, sender) = DirectReceiver::new();
    let gateway = Pipeline::traces()
        .receiver(receiver)
        .processor(sampler)
        .exporter(NopExporter::new())
        .build()
        .map_err(|e| e.to_string())?
        .start()
        .await
        .map_err(|e| e.to_string())?;
    for chunk in 0..traces.div_ceil(500) {
        let n = 500.min(traces - chunk * 500);
        sender
            .send(generate_traces(n, 10, chunk as u64))
            .await
            .map_err(|e| e.to_string())?;
    }
    while handle.stats().traces_buffered < traces as i64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = handle.stats();
    let started = Instant::now();
    gateway
        .shutdown(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let s = handle.stats();
    let received: i64 = running_peers
        .iter()
        .map(|(_, h)| h.stats().handoff_received_traces)
        .sum();
    println!(
        "held {} traces ({} spans, {:.1} MiB encoded): handed {} traces, {} spans, {:.1} MiB in {:.0} ms \
         ({:.0} k spans/s); failed {}; peers received {}",
        held.traces_buffered,
        held.spans_buffered,
        held.bytes_buffered as f64 / (1 << 20) as f64,
        s.handoff_sent_traces,
        s.handoff_sent_spans,
        s.handoff_sent_bytes as f64 / (1 << 20) as f64,
        took.as_secs_f64() * 1e3,
        s.handoff_sent_spans as f64 / took.as_secs_f64() / 1e3,
        s.handoff_failed_traces,
        received,
    );
    for (p, _) in running_peers {
        p.shutdown(Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
    }
    if received != traces as i64 || s.handoff_failed_traces != 0 {
        return Err(format!("handed {received} of {traces} traces"));
    }
    Ok(())
}

fn main() {
    let mut traces = 50_000;
    let mut runs = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--traces", Some(v)) => traces = v,
            ("--runs", Some(v)) => runs = v,
            _ => {
                eprintln!("usage: handoff [--traces N] [--runs N]");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for _ in 0..runs {
        if let Err(e) = rt.block_on(run(traces)) {
            eprintln!("handoff: {e}");
            std::process::exit(1);
        }
    }
}
