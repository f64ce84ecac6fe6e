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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lambox_runtime::{FunctionConfig, Launcher, LogSink, Pool, PoolOptions};

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
        let pool =
            Pool::new(fc, (self.launchers)(&image), self.sink.clone(), options).map_err(|e| {
                PoolError::Other(error::service(&format!(
                    "function {}: {e}",
                    c.function_name
                )))
            })?;
        let old = lock(&self.pools).insert(
            key,
            PoolEntry {
                revision: c.revision_id.clone(),
                pool: pool.clone(),
            },
        );
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
