//! Function versions → `lambox_runtime::Pool`s, and concurrency admission.
//!
//! One pool per (function, version), built on first invoke from the version's record and its
//! stored image, and rebuilt when the record's `RevisionId` changes (UpdateFunctionCode /
//! UpdateFunctionConfiguration): invokes already running finish on the old pool's
//! environments, which are then torn down; new invokes start environments of the new revision.
//!
//! Admission, before a synchronous invoke reaches a pool: a function with reserved concurrency
//! N runs at most N invokes at once (N = 0 throttles everything), else
//! `ReservedFunctionConcurrentInvocationLimitExceeded`; functions without reserved concurrency
//! share the account's unreserved concurrency (account limit − Σ reserved), else
//! `ConcurrentInvocationLimitExceeded`. Both are 429 `TooManyRequestsException` at once, as
//! Lambda answers synchronous invokes (no queueing).
//!
//! Memory, lambox's own bound (the machine is not Lambda's fleet): every live environment holds
//! its function's MemorySize of the memory budget (`[limits] memory_mb`, default MemTotal minus
//! a reserve) from its launch until its teardown. An invoke that finds no idle environment of
//! its version would start one; if the budget cannot take that environment's MemorySize on top
//! of the live ones and the other cold starts already admitted, a synchronous invoke is 429
//! `ConcurrentInvocationLimitExceeded` and an event waits and tries again. Idle environments
//! of other versions are evicted first (oldest first) to make room. (Two invokes racing for
//! one idle environment may start one environment more than the budget allows.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lambox_runtime::{
    EnvControl, FunctionConfig, LaunchError, LaunchSpec, Launched, Launcher, LogSink, Pool,
    PoolOptions,
};

use crate::error::{self, ApiError, ThrottleReason};
use crate::images::{ImageResolver, ResolvedImage};
use crate::model::VersionRecord;

/// Why a version's pool could not be built.
#[derive(Debug)]
pub enum PoolError {
    /// The version's pinned image cannot be loaded from the store (removed under it).
    Image(crate::images::ImageFailure),
    Other(ApiError),
}

/// Builds the launcher for an image's layers (the sandbox in `lambox serve`).
pub type LauncherFactory = Arc<dyn Fn(&ResolvedImage) -> Arc<dyn Launcher> + Send + Sync>;

/// The memory budget: MiB held by live environments, and by admitted cold starts whose
/// environment is not launched yet (`tickets`, per function and version).
#[derive(Debug, Default)]
struct Budget {
    used_mb: u64,
    reserved_mb: u64,
    tickets: HashMap<(String, String), usize>,
}

#[derive(Debug)]
struct MemoryBudget {
    limit_mb: Option<u64>,
    state: Mutex<Budget>,
}

impl MemoryBudget {
    /// Takes one ticket of `key` (a cold start admitted for it), if any, and its reservation.
    fn take_ticket(b: &mut Budget, key: &(String, String), mb: u64) {
        if let Some(n) = b.tickets.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                b.tickets.remove(key);
            }
            b.reserved_mb = b.reserved_mb.saturating_sub(mb);
        }
    }
}

/// An admitted cold start's share of the memory budget until its environment is launched (the
/// launch takes the ticket) or the invoke is over.
#[derive(Debug)]
pub struct MemoryTicket {
    budget: Option<(Arc<MemoryBudget>, (String, String), u64)>,
}

impl Drop for MemoryTicket {
    fn drop(&mut self) {
        if let Some((budget, key, mb)) = self.budget.take() {
            MemoryBudget::take_ticket(&mut lock(&budget.state), &key, mb);
        }
    }
}

/// The pool's launcher, charging each environment's memory to the budget while it lives.
struct BudgetLauncher {
    inner: Arc<dyn Launcher>,
    budget: Arc<MemoryBudget>,
    key: (String, String),
}

impl Launcher for BudgetLauncher {
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        let launched = self.inner.launch(spec)?;
        let mb = u64::from(spec.memory_mb);
        {
            let mut b = lock(&self.budget.state);
            MemoryBudget::take_ticket(&mut b, &self.key, mb);
            b.used_mb += mb;
        }
        Ok(Launched {
            child: launched.child,
            listener: launched.listener,
            control: Box::new(BudgetedControl {
                inner: launched.control,
                budget: self.budget.clone(),
                mb,
                released: AtomicBool::new(false),
            }),
        })
    }
}

/// An environment's control that gives its memory back when it is killed (the kernel frees
/// it as the processes die), cleaned up, or dropped, whichever comes first.
#[derive(Debug)]
struct BudgetedControl {
    inner: Box<dyn EnvControl>,
    budget: Arc<MemoryBudget>,
    mb: u64,
    released: AtomicBool,
}

impl BudgetedControl {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            let mut b = lock(&self.budget.state);
            b.used_mb = b.used_mb.saturating_sub(self.mb);
        }
    }
}

impl Drop for BudgetedControl {
    fn drop(&mut self) {
        self.release();
    }
}

impl EnvControl for BudgetedControl {
    fn freeze(&self) -> std::io::Result<()> {
        self.inner.freeze()
    }
    fn freeze_nowait(&self) -> std::io::Result<()> {
        self.inner.freeze_nowait()
    }
    fn thaw(&self) -> std::io::Result<()> {
        self.inner.thaw()
    }
    fn kill(&self) {
        self.inner.kill();
        self.release();
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        self.inner.max_memory_bytes()
    }
    fn oom_killed(&self) -> bool {
        self.inner.oom_killed()
    }
    fn cleanup(&self) {
        self.inner.cleanup();
        self.release();
    }
}

struct PoolEntry {
    revision: String,
    pool: Pool,
}

/// Counts one admitted invoke until dropped.
#[derive(Debug)]
pub struct Admission {
    counters: Vec<Arc<AtomicUsize>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        for c in &self.counters {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The pools of every function version.
pub struct Scheduler {
    images: Arc<dyn ImageResolver>,
    launchers: LauncherFactory,
    sink: Arc<dyn LogSink>,
    account_id: String,
    region: String,
    account_limit: usize,
    idle_timeout: Option<std::time::Duration>,
    memory: Arc<MemoryBudget>,
    unreserved_in_flight: Arc<AtomicUsize>,
    per_function: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    pools: Mutex<HashMap<(String, String), PoolEntry>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("account_limit", &self.account_limit)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    pub fn new(
        images: Arc<dyn ImageResolver>,
        launchers: LauncherFactory,
        sink: Arc<dyn LogSink>,
        account_id: String,
        region: String,
        account_limit: usize,
    ) -> Scheduler {
        Scheduler {
            images,
            launchers,
            sink,
            account_id,
            region,
            account_limit,
            idle_timeout: None,
            memory: Arc::new(MemoryBudget {
                limit_mb: None,
                state: Mutex::new(Budget::default()),
            }),
            unreserved_in_flight: Arc::new(AtomicUsize::new(0)),
            per_function: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Environments idle this long are torn down (the next invoke cold-starts); `None`: kept
    /// until the pool goes. Applies to pools built afterwards.
    pub fn with_idle_timeout(mut self, idle_timeout: Option<std::time::Duration>) -> Scheduler {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Environments may hold at most `limit_mb` MiB together (`None`: no bound). Call before
    /// the first pool is built.
    pub fn with_memory_limit(mut self, limit_mb: Option<u64>) -> Scheduler {
        self.memory = Arc::new(MemoryBudget {
            limit_mb,
            state: Mutex::new(Budget::default()),
        });
        self
    }

    /// MiB held by live environments now.
    pub fn memory_in_use_mb(&self) -> u64 {
        lock(&self.memory.state).used_mb
    }

    /// Admits an invoke of `pool` (function `function`, version `version`, `memory_mb`) against
    /// the memory budget: free if an environment of the pool is idle, else a cold start that
    /// must fit beside the live environments and the cold starts already admitted.
    pub fn admit_memory(
        &self,
        pool: &Pool,
        function: &str,
        version: &str,
        memory_mb: u64,
    ) -> Result<MemoryTicket, ApiError> {
        let Some(limit) = self.memory.limit_mb else {
            return Ok(MemoryTicket { budget: None });
        };
        if pool.idle_environments() > 0 {
            return Ok(MemoryTicket { budget: None });
        }
        let key = (function.to_owned(), version.to_owned());
        loop {
            {
                let mut b = lock(&self.memory.state);
                if b.used_mb + b.reserved_mb + memory_mb <= limit {
                    b.reserved_mb += memory_mb;
                    *b.tickets.entry(key.clone()).or_insert(0) += 1;
                    return Ok(MemoryTicket {
                        budget: Some((self.memory.clone(), key, memory_mb)),
                    });
                }
            }
            // Not under the budget's lock: a killed environment gives its memory back.
            if !self.evict_one_idle() {
                let b = lock(&self.memory.state);
                tracing::info!(
                    function,
                    version,
                    memory_mb,
                    used_mb = b.used_mb,
                    reserved_mb = b.reserved_mb,
                    limit_mb = limit,
                    "no memory for another environment"
                );
                return Err(error::too_many_requests(
                    ThrottleReason::ConcurrentInvocationLimitExceeded,
                ));
            }
        }
    }

    /// Whether some environment, of any version, is running an invoke (it may be idle again
    /// in a moment, and then evictable).
    pub fn has_busy_environments(&self) -> bool {
        lock(&self.pools)
            .values()
            .any(|e| e.pool.environments() > e.pool.idle_environments())
    }

    /// Tears down one idle environment of any version; false if none is idle.
    fn evict_one_idle(&self) -> bool {
        let pools: Vec<Pool> = lock(&self.pools)
            .values()
            .filter(|e| e.pool.idle_environments() > 0)
            .map(|e| e.pool.clone())
            .collect();
        pools.iter().any(Pool::evict_idle)
    }

    /// The account's concurrency limit.
    pub fn account_limit(&self) -> usize {
        self.account_limit
    }

    /// Admits one invoke of `function` given its reserved concurrency and the account's total
    /// reserved concurrency, or says why not.
    pub fn admit(
        &self,
        function: &str,
        reserved: Option<u64>,
        total_reserved: u64,
    ) -> Result<Admission, ApiError> {
        let counter = lock(&self.per_function)
            .entry(function.to_owned())
            .or_insert_with(|| Arc::new(AtomicUsize::new(0)))
            .clone();
        let (limit, shared, reason) = match reserved {
            Some(n) => (
                n as usize,
                None,
                ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            ),
            None => (
                self.account_limit.saturating_sub(total_reserved as usize),
                Some(self.unreserved_in_flight.clone()),
                ThrottleReason::ConcurrentInvocationLimitExceeded,
            ),
        };
        let gate = shared.unwrap_or_else(|| counter.clone());
        let before = gate.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            gate.fetch_sub(1, Ordering::AcqRel);
            return Err(error::too_many_requests(reason));
        }
        Ok(Admission {
            counters: vec![gate],
        })
    }

    /// The pool for `record` if it is already built for its RevisionId (never blocks).
    pub fn cached_pool(&self, record: &VersionRecord, version: &str) -> Option<Pool> {
        let c = &record.configuration;
        let pools = lock(&self.pools);
        let e = pools.get(&(c.function_name.clone(), version.to_owned()))?;
        (e.revision == c.revision_id).then(|| e.pool.clone())
    }

    /// The pool for `record` (version label `version`), built or rebuilt as needed. Blocking
    /// (it may read the image config): call from `spawn_blocking`.
    pub fn pool(&self, record: &VersionRecord, version: &str) -> Result<Pool, PoolError> {
        let c = &record.configuration;
        let key = (c.function_name.clone(), version.to_owned());
        if let Some(e) = lock(&self.pools).get(&key) {
            if e.revision == c.revision_id {
                return Ok(e.pool.clone());
            }
        }
        let image = self.images.load(&c.code_sha256).map_err(PoolError::Image)?;
        let ic = &record.image_config;
        let image_config = lambox_runtime::ImageConfig {
            entrypoint: ic
                .entry_point
                .clone()
                .unwrap_or(image.config.entrypoint.clone()),
            cmd: ic.command.clone().unwrap_or(image.config.cmd.clone()),
            workdir: ic
                .working_directory
                .clone()
                .filter(|w| !w.is_empty())
                .or(image.config.workdir.clone()),
            env: image.config.env.clone(),
        };
        let mut fc = FunctionConfig::new(c.function_name.clone(), image_config);
        fc.memory_mb = c.memory_size as u32;
        fc.timeout_secs = c.timeout as u32;
        fc.ephemeral_storage_mb = c.ephemeral_storage.size as u32;
        fc.env = c
            .environment
            .as_ref()
            .map(|e| {
                e.variables
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        fc.region = self.region.clone();
        fc.account_id = self.account_id.clone();
        // Function code never sees lambox's own credentials.
        fc.credentials = None;
        fc.version = version.to_owned();
        let options = PoolOptions {
            concurrency: self.account_limit.max(1),
            queue_capacity: self.account_limit.max(1),
            idle_timeout: self.idle_timeout,
            ..PoolOptions::default()
        };
        let launcher = Arc::new(BudgetLauncher {
            inner: (self.launchers)(&image),
            budget: self.memory.clone(),
            key: key.clone(),
        });
        let pool = Pool::new(fc, launcher, self.sink.clone(), options).map_err(|e| {
            PoolError::Other(error::service(&format!(
                "function {}: {e}",
                c.function_name
            )))
        })?;
        // Two first invokes of a version may both have built a pool: the first one in wins,
        // and the other pool, never used, goes (replacing a pool of the same revision would
        // shut down the one the other invoke is already queued on).
        let old = {
            let mut pools = lock(&self.pools);
            match pools.get(&key) {
                Some(e) if e.revision == c.revision_id => {
                    let winner = e.pool.clone();
                    drop(pools);
                    pool.shutdown();
                    return Ok(winner);
                }
                _ => pools.insert(
                    key,
                    PoolEntry {
                        revision: c.revision_id.clone(),
                        pool: pool.clone(),
                    },
                ),
            }
        };
        if let Some(old) = old {
            old.pool.shutdown();
        }
        Ok(pool)
    }

    /// Tears down every pool of `function` (deleted), or of one version of it.
    pub fn remove(&self, function: &str, version: Option<&str>) {
        let mut pools = lock(&self.pools);
        let keys: Vec<_> = pools
            .keys()
            .filter(|(f, v)| f == function && version.is_none_or(|x| x == v))
            .cloned()
            .collect();
        for k in keys {
            if let Some(e) = pools.remove(&k) {
                e.pool.shutdown();
            }
        }
    }

    /// Refuses new invokes everywhere and kills idle environments; running invokes finish.
    pub fn shutdown(&self) {
        for (_, e) in lock(&self.pools).drain() {
            e.pool.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageFailure;
    use lambox_runtime::MemoryLogSink;
    use std::time::Duration;

    /// Loads every image slowly, so that concurrent first invokes overlap in `pool`.
    #[derive(Debug)]
    struct SlowImages;

    impl ImageResolver for SlowImages {
        fn resolve(&self, uri: &str, _: &str) -> Result<ResolvedImage, ImageFailure> {
            self.load(uri)
        }
        fn load(&self, code_sha256: &str) -> Result<ResolvedImage, ImageFailure> {
            std::thread::sleep(Duration::from_millis(50));
            Ok(ResolvedImage {
                digest: format!("sha256:{code_sha256}").parse().expect("digest"),
                resolved_uri: "oci:x".to_owned(),
                config: lambox_runtime::ImageConfig {
                    entrypoint: vec!["/bootstrap".to_owned()],
                    ..Default::default()
                },
                layers: Vec::new(),
                code_size: 0,
            })
        }
    }

    struct NoLaunch;

    impl Launcher for NoLaunch {
        fn launch(&self, _: &LaunchSpec) -> Result<Launched, LaunchError> {
            Err(LaunchError::InvalidEntrypoint(
                "not in this test".to_owned(),
            ))
        }
    }

    fn record(revision: &str) -> VersionRecord {
        crate::model::sample_record("f", revision)
    }

    fn scheduler() -> Arc<Scheduler> {
        Arc::new(Scheduler::new(
            Arc::new(SlowImages),
            Arc::new(|_: &ResolvedImage| Arc::new(NoLaunch) as Arc<dyn Launcher>),
            Arc::new(MemoryLogSink::default()),
            "000000000000".to_owned(),
            "us-east-1".to_owned(),
            10,
        ))
    }

    #[test]
    fn concurrent_first_builds_of_a_version_share_one_open_pool() {
        let s = scheduler();
        let rec = record("r1");
        let pools: Vec<Pool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| s.pool(&rec, "$LATEST").map_err(|_| ()).expect("pool")))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert!(
            pools.iter().all(|p| !p.is_closed()),
            "a caller got a shut-down pool"
        );
        let cached = s.cached_pool(&rec, "$LATEST").expect("cached");
        assert!(!cached.is_closed());
    }

    #[test]
    fn a_new_revision_replaces_and_shuts_down_the_old_pool() {
        let s = scheduler();
        let old = s
            .pool(&record("r1"), "$LATEST")
            .map_err(|_| ())
            .expect("pool");
        let new = s
            .pool(&record("r2"), "$LATEST")
            .map_err(|_| ())
            .expect("pool");
        assert!(old.is_closed());
        assert!(!new.is_closed());
        assert!(s.cached_pool(&record("r1"), "$LATEST").is_none());
    }
}
