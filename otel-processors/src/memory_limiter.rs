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
//! (`otelcol_processor_refused_spans`).
//!
//! Where the Collector forces Go's garbage collector over the limits, the limiter asks the
//! allocator to hand the memory it holds free back to the system ([`MemoryProbe::release`]:
//! `malloc_trim` with glibc's allocator) and measures again: over the soft limit at most
//! every `min_gc_interval_when_soft_limited` (default 10 s), over the hard limit at every
//! check (or every `min_gc_interval_when_hard_limited`). Resident memory is what the
//! limiter measures, and an allocator that keeps freed memory (glibc keeps it in its
//! arenas) would otherwise keep it over the soft limit after the pipeline drained, so
//! refusing for good. Each release is counted
//! (`otelcol_processor_memory_limiter_releases`).

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
    /// Over the soft limit, how often at most the allocator is asked to hand free memory
    /// back ([`MemoryProbe::release`]; the Collector forces Go's collector at this pace).
    /// Default 10 s, as the Collector's.
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub min_gc_interval_when_soft_limited: Option<Duration>,
    /// The same over the hard limit. Default: at every check.
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
    /// Ask the allocator to hand memory it holds free back to the system, so that
    /// [`used_bytes`](Self::used_bytes) counts what is in use; called while over the
    /// limits, at the configured pace. Default: nothing.
    fn release(&self) {}
}

/// glibc's allocator keeps what the program freed in its arenas, so resident memory stays
/// at its peak after a drain; `malloc_trim(0)` hands the free pages back. The one unsafe
/// call of the workspace (docs/adr/007-one-unsafe-call.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_allocator() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes no pointers and may be called from any thread at any
    // time (glibc locks each arena while it walks it). With another global allocator
    // (mimalloc) it trims only glibc's own heap, which then holds little.
    unsafe {
        malloc_trim(0);
    }
}

/// Other allocators (musl's, macOS's, Windows', mimalloc) return freed pages themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_allocator() {}

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
    fn release(&self) {
        trim_allocator();
    }

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
    /// What [`MemoryProbe::release`] brings the reading down to (`u64::MAX`: nothing).
    after_release: Arc<AtomicU64>,
    releases: Arc<AtomicU64>,
}

impl ManualMemory {
    /// A probe reporting `used` of `total` bytes.
    pub fn new(used: u64, total: u64) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(used)),
            total: Arc::new(AtomicU64::new(total)),
            after_release: Arc::new(AtomicU64::new(u64::MAX)),
            releases: Arc::default(),
        }
    }

    /// Simulate an allocator holding `bytes` fewer than the reading in free memory: the
    /// next [`MemoryProbe::release`] lowers the reading by that much (once).
    pub fn hold_free(&self, bytes: u64) {
        let used = self.used.load(Ordering::SeqCst);
        self.after_release
            .store(used.saturating_sub(bytes), Ordering::SeqCst);
    }

    /// How many times the limiter asked for memory back.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::SeqCst)
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
    fn release(&self) {
        self.releases.fetch_add(1, Ordering::SeqCst);
        let to = self.after_release.swap(u64::MAX, Ordering::SeqCst);
        if to != u64::MAX {
            self.used.store(to, Ordering::SeqCst);
        }
    }

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

const RELEASES: Instrument = Instrument::counter(
    "otelcol_processor_memory_limiter_releases",
    "{releases}",
    "Times the memory limiter, over a limit, asked the allocator to hand the memory it \
     holds free back to the system before measuring again.",
);

struct Gate {
    /// Over the soft / the hard limit: how often at most to ask for free memory back.
    release_soft: Duration,
    release_hard: Duration,
    last_release: Mutex<Option<Instant>>,
    releases: Counter,
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
    /// `used`, or, over a limit and when its pace allows, what is used once the
    /// allocator handed back what it held free.
    fn released(&self, probe: &dyn MemoryProbe, used: u64) -> u64 {
        let pace = if used >= self.hard {
            self.release_hard
        } else if used >= self.soft {
            self.release_soft
        } else {
            return used;
        };
        let now = Instant::now();
        {
            let mut last = self.last_release.lock();
            if last.is_some_and(|at| now.duration_since(at) < pace) {
                return used;
            }
            *last = Some(now);
        }
        probe.release();
        self.releases.add(1);
        probe.used_bytes().unwrap_or(used)
    }

    /// Measure and set the gate. A check that cannot measure opens the gate (a gate shut
    /// on a stale reading would refuse every client for as long as measuring fails), and
    /// is counted and logged when it starts and when it ends.
    fn check(&self, probe: &dyn MemoryProbe) {
        match probe.used_bytes().map(|used| self.released(probe, used)) {
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
            release_soft: self
                .config
                .min_gc_interval_when_soft_limited
                .unwrap_or(Duration::from_secs(10)),
            release_hard: self
                .config
                .min_gc_interval_when_hard_limited
                .unwrap_or_default(),
            last_release: Mutex::new(None),
            releases: ctx.telemetry().counter(&RELEASES, &[]),
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
