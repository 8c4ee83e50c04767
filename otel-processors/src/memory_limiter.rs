//! The `memory_limiter` processor: refuse new data while the process uses too much memory.
//!
//! ```yaml
//! memory_limiter:
//!   check_interval: 1s
//!   limit_mib: 4000          # hard limit
//!   spike_limit_mib: 800     # soft limit = limit - spike (default spike: 20 % of limit)
//!   # or, relative to the memory available to the process (cgroup limit, else RAM):
//!   # limit_percentage: 80
//!   # spike_limit_percentage: 20
//! ```
//!
//! Every `check_interval` the limiter **measures** the process's resident memory (Linux:
//! `VmRSS` in `/proc/self/status`). From the moment usage reaches the soft limit it
//! refuses new batches with a retryable error carrying `retry_after = check_interval`, so
//! receivers push back (`RESOURCE_EXHAUSTED` / HTTP 429) and clients retry later; past the
//! hard limit it keeps refusing. It accepts again once usage is below the soft limit. It
//! never drops data it accepted. Refusals are counted by the pipeline
//! (`otelcol_processor_refused_spans`). Rust has no garbage collector to force, so unlike
//! the Collector nothing else happens at the hard limit: the limiter can only stop new data
//! arriving while the rest of the pipeline drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use otel_pipeline_core::telemetry::{Counter, Instrument};
use otel_pipeline_core::{
    Batch, BoxError, BoxFuture, BuildError, ComponentContext, ComponentId, ConsumeError, Consumer,
    Lifecycle, Processor, Refusal, Signal,
};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// Configuration of the memory limiter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    /// How often memory is measured (default 1 s).
    #[serde(
        default = "default_interval",
        deserialize_with = "crate::config::duration"
    )]
    pub check_interval: Duration,
    /// Hard limit in MiB.
    #[serde(default)]
    pub limit_mib: u64,
    /// Spike allowance in MiB; soft limit = limit - spike (default: 20 % of the limit).
    #[serde(default)]
    pub spike_limit_mib: u64,
    /// Hard limit as a percentage of available memory (instead of `limit_mib`).
    #[serde(default)]
    pub limit_percentage: u32,
    /// Spike allowance as a percentage of available memory.
    #[serde(default)]
    pub spike_limit_percentage: u32,
    /// The Collector's pacing of Go's garbage collector while over the soft limit:
    /// accepted so its configurations load. Rust frees memory as it goes; no effect here.
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub min_gc_interval_when_soft_limited: Option<Duration>,
    /// The same over the hard limit: accepted, no effect here.
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub min_gc_interval_when_hard_limited: Option<Duration>,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        Self {
            check_interval: default_interval(),
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
            min_gc_interval_when_soft_limited: None,
            min_gc_interval_when_hard_limited: None,
        }
    }
}

/// Where memory readings come from. Inject your own in tests.
pub trait MemoryProbe: Send + Sync + 'static {
    /// Bytes the process uses now.
    fn used_bytes(&self) -> Option<u64>;
    /// Bytes available to the process (cgroup limit, else physical memory).
    fn total_bytes(&self) -> Option<u64>;
}

/// The process's own memory, measured from `/proc` (Linux): resident set size, and the
/// smaller of the cgroup's limit (v2 or v1) and physical memory. Where `/proc` cannot be
/// read, the limiter refuses to build rather than never refusing data.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessMemory;

fn kib_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

impl MemoryProbe for ProcessMemory {
    fn used_bytes(&self) -> Option<u64> {
        kib_field(
            &std::fs::read_to_string("/proc/self/status").ok()?,
            "VmRSS:",
        )
    }

    fn total_bytes(&self) -> Option<u64> {
        let ram = kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:");
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|own| cgroup_limit(std::path::Path::new("/sys/fs/cgroup"), &own));
        match (cgroup, ram) {
            (Some(c), Some(r)) => Some(c.min(r)),
            (c, r) => c.or(r),
        }
    }
}

/// The memory limit of the process's cgroup under `root` (`/sys/fs/cgroup`), from the
/// process's `/proc/self/cgroup` text: cgroup v2 (`0::/path` and `memory.max`) or v1 (the
/// `memory` controller's `memory.limit_in_bytes`). A limit on any ancestor applies too (a
/// pod's limit on its slice, with `max` on the container's leaf), so the effective limit
/// is the smallest found walking from the process's cgroup up to the root. Inside a
/// container the cgroup namespace makes the path `/`, and only the root's own file is
/// seen. No limit anywhere (`max`, or v1's page-rounded `i64::MAX`) is `None`.
fn cgroup_limit(root: &std::path::Path, own: &str) -> Option<u64> {
    let read = |file: std::path::PathBuf| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let v: u64 = text.trim().parse().ok()?;
        // v1 says "no limit" with a number near i64::MAX.
        (v < 1 << 60).then_some(v)
    };
    // The smallest limit from `base/path` up to `base`.
    let walk = |base: std::path::PathBuf, path: &str, file: &str| -> Option<u64> {
        let mut dir = base.join(path.trim_start_matches('/'));
        let mut least: Option<u64> = None;
        loop {
            if let Some(v) = read(dir.join(file)) {
                least = Some(least.map_or(v, |l| l.min(v)));
            }
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                break;
            }
        }
        least
    };
    let mut least: Option<u64> = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let found = if controllers.is_empty() {
            // v2: one unified hierarchy.
            walk(root.to_path_buf(), path, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            walk(root.join("memory"), path, "memory.limit_in_bytes")
        } else {
            None
        };
        if let Some(v) = found {
            least = Some(least.map_or(v, |l| l.min(v)));
        }
    }
    least
}

/// A probe whose reading is set by hand, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualMemory {
    used: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl ManualMemory {
    /// A probe reporting `used` of `total` bytes.
    pub fn new(used: u64, total: u64) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(used)),
            total: Arc::new(AtomicU64::new(total)),
        }
    }

    /// Change the reading.
    pub fn set_used(&self, bytes: u64) {
        self.used.store(bytes, Ordering::SeqCst);
    }

    /// Make the probe fail to measure (as `/proc` becoming unreadable would), until the
    /// next [`set_used`](Self::set_used).
    pub fn set_unreadable(&self) {
        self.used.store(u64::MAX, Ordering::SeqCst);
    }
}

impl MemoryProbe for ManualMemory {
    fn used_bytes(&self) -> Option<u64> {
        Some(self.used.load(Ordering::SeqCst)).filter(|u| *u != u64::MAX)
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.total.load(Ordering::SeqCst))
    }
}

/// The memory limiter, for any signal.
#[derive(Clone)]
pub struct MemoryLimiter {
    id: ComponentId,
    config: MemoryLimiterConfig,
    probe: Arc<dyn MemoryProbe>,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish()
    }
}

impl MemoryLimiter {
    /// A limiter with id `memory_limiter` measuring this process.
    pub fn new(config: MemoryLimiterConfig) -> Self {
        Self {
            id: ComponentId::new("memory_limiter"),
            config,
            probe: Arc::new(ProcessMemory),
        }
    }

    /// Measure with `probe` instead.
    pub fn with_probe(mut self, probe: impl MemoryProbe) -> Self {
        self.probe = Arc::new(probe);
        self
    }

    /// Use another id.
    pub fn with_id(mut self, id: ComponentId) -> Self {
        self.id = id;
        self
    }

    /// (hard, soft) limits in bytes.
    fn limits(&self, ctx: &ComponentContext<'_>) -> Result<(u64, u64), BuildError> {
        let c = &self.config;
        const MIB: u64 = 1 << 20;
        // A limiter that cannot measure would never refuse: fail now instead.
        if self.probe.used_bytes().is_none() {
            return Err(ctx.invalid(
                "",
                "cannot read this process's memory use (the default probe reads /proc/self/status, \
                 on Linux); give the limiter a MemoryProbe that can",
            ));
        }
        if c.check_interval.is_zero() {
            return Err(ctx.invalid("check_interval", "must be positive"));
        }
        let (hard, spike) = match (c.limit_mib, c.limit_percentage) {
            (0, 0) => return Err(ctx.invalid("limit_mib", "set limit_mib or limit_percentage")),
            (m, 0) => (
                m * MIB,
                if c.spike_limit_mib == 0 {
                    m * MIB / 5
                } else {
                    c.spike_limit_mib * MIB
                },
            ),
            (0, p) => {
                if p > 100 || c.spike_limit_percentage > 100 {
                    return Err(ctx.invalid("limit_percentage", "percentages are 1 to 100"));
                }
                let total = self.probe.total_bytes().ok_or_else(|| {
                    ctx.invalid(
                        "limit_percentage",
                        "cannot read the memory available to the process",
                    )
                })?;
                let spike_p = if c.spike_limit_percentage == 0 {
                    p / 5
                } else {
                    c.spike_limit_percentage
                };
                (total / 100 * u64::from(p), total / 100 * u64::from(spike_p))
            }
            _ => {
                return Err(ctx.invalid(
                    "limit_percentage",
                    "set limit_mib or limit_percentage, not both",
                ));
            }
        };
        if spike >= hard {
            return Err(ctx.invalid("spike_limit_mib", "must be below the limit"));
        }
        Ok((hard, hard - spike))
    }
}

/// The limiter's own instrument.
const MEASURE_FAILURES: Instrument = Instrument::counter(
    "otelcol_processor_memory_limiter_measure_failures",
    "{checks}",
    "Checks in which the memory limiter could not measure the process's memory; while it \
     cannot, it accepts data (the gate opens) and logs that it does.",
);

struct Gate {
    refusing: AtomicBool,
    used: AtomicU64,
    soft: u64,
    hard: u64,
    /// Checks that could not measure.
    failures: Counter,
    /// Whether the last check could not measure (logs once per change).
    blind: AtomicBool,
}

impl Gate {
    /// Measure and set the gate. A check that cannot measure opens the gate (a gate shut
    /// on a stale reading would refuse every client for as long as measuring fails), and
    /// is counted and logged when it starts and when it ends.
    fn check(&self, probe: &dyn MemoryProbe) {
        match probe.used_bytes() {
            Some(used) => {
                self.used.store(used, Ordering::Relaxed);
                self.refusing.store(used >= self.soft, Ordering::Release);
                if self.blind.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        used_mib = used >> 20,
                        "memory_limiter: measuring memory works again; the limits apply again"
                    );
                }
            }
            None => {
                self.failures.add(1);
                self.refusing.store(false, Ordering::Release);
                if !self.blind.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        "memory_limiter: cannot measure this process's memory; accepting all \
                         data until it can (otelcol_processor_memory_limiter_measure_failures \
                         counts the checks)"
                    );
                }
            }
        }
    }
}

/// The consumer built by [`MemoryLimiter`].
pub struct MemoryLimiterConsumer<N> {
    gate: Arc<Gate>,
    retry_after: Duration,
    next: N,
}

impl<N> std::fmt::Debug for MemoryLimiterConsumer<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiterConsumer")
            .field("refusing", &self.gate.refusing.load(Ordering::Relaxed))
            .field("used", &self.gate.used.load(Ordering::Relaxed))
            .field("soft", &self.gate.soft)
            .field("hard", &self.gate.hard)
            .finish()
    }
}

struct Checker {
    gate: Arc<Gate>,
    probe: Arc<dyn MemoryProbe>,
    interval: Duration,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Lifecycle for Checker {
    fn start(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        let (gate, probe, interval) = (
            Arc::clone(&self.gate),
            Arc::clone(&self.probe),
            self.interval,
        );
        gate.check(&*probe);
        *self.task.lock() = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
            loop {
                tick.tick().await;
                gate.check(&*probe);
            }
        }));
        Box::pin(async { Ok(()) })
    }

    fn shutdown(&self, _deadline: Instant) -> BoxFuture<'_, Result<(), BoxError>> {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        Box::pin(async { Ok(()) })
    }
}

impl<S: Signal> Processor<S> for MemoryLimiter {
    type Consumer<N: Consumer<S>> = MemoryLimiterConsumer<N>;

    fn id(&self) -> ComponentId {
        self.id.clone()
    }

    fn build<N: Consumer<S>>(
        self,
        next: N,
        ctx: &mut ComponentContext<'_>,
    ) -> Result<MemoryLimiterConsumer<N>, BuildError> {
        let (hard, soft) = self.limits(ctx)?;
        let gate = Arc::new(Gate {
            refusing: AtomicBool::new(false),
            used: AtomicU64::new(0),
            soft,
            hard,
            failures: ctx.telemetry().counter(&MEASURE_FAILURES, &[]),
            blind: AtomicBool::new(false),
        });
        ctx.register_lifecycle(Arc::new(Checker {
            gate: Arc::clone(&gate),
            probe: Arc::clone(&self.probe),
            interval: self.config.check_interval,
            task: Mutex::new(None),
        }));
        Ok(MemoryLimiterConsumer {
            gate,
            retry_after: self.config.check_interval,
            next,
        })
    }
}

impl<S: Signal, N: Consumer<S>> Consumer<S> for MemoryLimiterConsumer<N> {
    async fn consume(&self, batch: Batch<S>) -> Result<(), ConsumeError<S>> {
        if self.gate.refusing.load(Ordering::Acquire) {
            let used = self.gate.used.load(Ordering::Relaxed) >> 20;
            let over = if used >= self.gate.hard >> 20 {
                "hard"
            } else {
                "soft"
            };
            return Err(ConsumeError::Refused(Refusal {
                batch,
                reason: format!("memory limiter: {used} MiB in use, over the {over} limit").into(),
                retry_after: Some(self.retry_after),
            }));
        }
        self.next.consume(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> std::path::PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "otel-cgroup-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (path, text) in files {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        root
    }

    #[test]
    fn cgroup_v2_limit_at_the_process_path_or_the_namespace_root() {
        let root = tree(&[("kubepods/pod1/memory.max", "536870912\n")]);
        assert_eq!(cgroup_limit(&root, "0::/kubepods/pod1\n"), Some(512 << 20));
        // In a cgroup namespace the path is `/`: the root's own file.
        let root = tree(&[("memory.max", "1073741824\n")]);
        assert_eq!(cgroup_limit(&root, "0::/\n"), Some(1 << 30));
        let root = tree(&[("memory.max", "max\n")]);
        assert_eq!(cgroup_limit(&root, "0::/\n"), None, "no limit");
    }

    /// A limit set on an ancestor slice with `max` on the leaf (how a pod's limit sits
    /// above its containers' cgroups on a host view): the smallest along the path wins.
    #[test]
    fn cgroup_v2_limit_on_an_ancestor_applies() {
        let root = tree(&[
            ("kubepods.slice/memory.max", "max\n"),
            ("kubepods.slice/pod1.slice/memory.max", "268435456\n"),
            ("kubepods.slice/pod1.slice/ctr.scope/memory.max", "max\n"),
            ("memory.max", "max\n"),
        ]);
        assert_eq!(
            cgroup_limit(&root, "0::/kubepods.slice/pod1.slice/ctr.scope\n"),
            Some(256 << 20)
        );
        // A tighter leaf wins over a looser ancestor.
        let root = tree(&[
            ("a/memory.max", "1073741824\n"),
            ("a/b/memory.max", "536870912\n"),
        ]);
        assert_eq!(cgroup_limit(&root, "0::/a/b\n"), Some(512 << 20));
        // v1 walks its memory hierarchy the same way.
        let root = tree(&[
            ("memory/kubepods/memory.limit_in_bytes", "134217728\n"),
            (
                "memory/kubepods/pod1/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(
            cgroup_limit(&root, "4:memory:/kubepods/pod1\n"),
            Some(128 << 20)
        );
        // A path that tries to climb out of the hierarchy stops at its root.
        let root = tree(&[("memory.max", "max\n")]);
        assert_eq!(cgroup_limit(&root, "0::/../../etc\n"), None);
    }

    #[test]
    fn cgroup_v1_memory_controller_limit() {
        let root = tree(&[("memory/docker/abc/memory.limit_in_bytes", "268435456\n")]);
        let own = "12:pids:/docker/abc\n11:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n";
        assert_eq!(cgroup_limit(&root, own), Some(256 << 20));
        let root = tree(&[("memory/memory.limit_in_bytes", "9223372036854771712\n")]);
        assert_eq!(cgroup_limit(&root, "4:memory:/\n"), None, "v1's no limit");
        assert_eq!(cgroup_limit(&root, ""), None);
    }
}
