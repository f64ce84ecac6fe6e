//! `lambox serve`: the Lambda API (`2015-03-31`) on one port, backed by lambox-api.
//!
//! Settings come from, in rising precedence: built-in defaults, the TOML file named by
//! `--config`/`LAMBOX_CONFIG`, environment variables, flags. SIGTERM or Ctrl-C: stop
//! accepting, let in-flight requests and background work (image pulls, async events) finish
//! within the grace period, tear every environment down, exit 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use lambox_api::sigv4::{self, AccessKey, SecretKey};
use lambox_api::{Lambda, LogStore, Scheduler, ServiceConfig, State, StoreImages};
use lambox_image::store::Store;
use lambox_runtime::{Launcher, StdoutLogSink};
use serde::Deserialize;

use crate::launcher::{NetworkArgs, SandboxHost};

const DEFAULT_LISTEN: &str = "127.0.0.1:4566";
const DEFAULT_ACCOUNT: &str = "000000000000";
const DEFAULT_REGION: &str = "us-east-1";
const DEFAULT_ACCOUNT_CONCURRENCY: u64 = 1000;
const DEFAULT_GRACE_SECS: u64 = 30;
/// Lambda does not publish how long an idle environment lives (minutes to hours are
/// observed); lambox keeps one 10 minutes.
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
/// Of the machine's memory, environments may hold all but this share (at least 512 MiB), left
/// to lambox itself, the page cache and the rest of the host.
const MEMORY_RESERVE_FRACTION: u64 = 8;
const MEMORY_RESERVE_MIN_MB: u64 = 512;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys: listen, data_dir, account_id, region, [limits], [auth])
    #[arg(long, env = "LAMBOX_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the API [default: 127.0.0.1:4566]
    #[arg(long, env = "LAMBOX_LISTEN")]
    listen: Option<SocketAddr>,
    /// Account id in every ARN [default: 000000000000]
    #[arg(long, env = "LAMBOX_ACCOUNT_ID")]
    account_id: Option<String>,
    /// Region in every ARN [default: us-east-1]
    #[arg(long, env = "LAMBOX_REGION")]
    region: Option<String>,
    /// Concurrent executions of the account [default: 1000]
    #[arg(long, env = "LAMBOX_ACCOUNT_CONCURRENCY")]
    account_concurrency: Option<u64>,
    /// Seconds in-flight work may take to finish after SIGTERM [default: 30]
    #[arg(long, env = "LAMBOX_SHUTDOWN_GRACE")]
    shutdown_grace: Option<u64>,
    /// Seconds an idle environment is kept before it is torn down; 0 = until shutdown [default: 600]
    #[arg(long, env = "LAMBOX_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// MiB the environments may hold together (their MemorySize); an invoke that would need
    /// more is throttled [default: MemTotal minus 1/8, at least 512 MiB]
    #[arg(long, env = "LAMBOX_MEMORY_MB")]
    memory_mb: Option<u64>,
    /// Events of one function that run at once; the others wait in order [default: 2 × CPUs]
    #[arg(long, env = "LAMBOX_ASYNC_CONCURRENCY")]
    async_concurrency: Option<u32>,
    /// Multiplies Lambda's async timings (retries after 1 and 2 minutes, event ages), for tests [default: 1]
    #[arg(long, env = "LAMBOX_ASYNC_RETRY_DELAY_SCALE")]
    async_retry_delay_scale: Option<f64>,
    /// Require a token from `aws ecr get-login-password` on the registry's /v2/ API
    #[arg(long, env = "LAMBOX_REGISTRY_AUTH")]
    registry_auth: bool,
    /// Authentication of API requests: none (any credentials) or sigv4 (AWS Signature V4
    /// with a configured key; also turns on the registry's token auth) [default: none]
    #[arg(long, env = "LAMBOX_AUTH")]
    auth: Option<AuthMode>,
    /// An access key accepted with --auth sigv4, as ACCESS_KEY_ID:SECRET (repeatable; env:
    /// comma-separated)
    #[arg(
        long = "auth-key",
        env = "LAMBOX_AUTH_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_keys: Vec<KeyArg>,
    /// OSV JSON export (file or directory) the registry's image scans match packages against
    #[arg(long, env = "LAMBOX_REGISTRY_VULN_DB")]
    registry_vuln_db: Option<PathBuf>,
    /// Bytes of log kept per function in DATA/logs (oldest dropped first) [default: 64 MiB]
    #[arg(long, env = "LAMBOX_LOG_RETENTION_BYTES")]
    log_retention_bytes: Option<u64>,
    #[command(flatten)]
    network: NetworkArgs,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    account_id: Option<String>,
    region: Option<String>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    auth: FileAuth,
}

/// One `--auth-key` value as given (`ACCESS_KEY_ID:SECRET`); parsed in [`resolve_auth`], so
/// that neither clap's errors nor `Debug` ever show the secret.
#[derive(Clone)]
struct KeyArg(String);

impl std::str::FromStr for KeyArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(KeyArg(s.to_owned()))
    }
}

impl std::fmt::Debug for KeyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyArg(<redacted>)")
    }
}

/// How API requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
enum AuthMode {
    /// Any credentials are accepted (as local AWS emulators do).
    #[default]
    None,
    /// AWS Signature Version 4 against the configured access keys.
    Sigv4,
}

/// `[auth]`: `mode` and `[[auth.keys]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    mode: Option<AuthMode>,
    #[serde(default)]
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    access_key_id: String,
    secret_access_key: String,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    account_concurrency: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    async_retry_delay_scale: Option<f64>,
    async_concurrency: Option<u32>,
    log_retention_bytes: Option<u64>,
    memory_mb: Option<u64>,
}

/// Every setting, resolved.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    listen: SocketAddr,
    data_dir: PathBuf,
    account_id: String,
    region: String,
    account_concurrency: u64,
    grace: Duration,
    /// `None`: idle environments are kept until shutdown.
    idle_timeout: Option<Duration>,
    async_retry_delay_scale: f64,
    /// Events of one function running at once.
    async_concurrency: u32,
    /// `Some` with `--auth sigv4`: the accepted keys (at least one).
    auth_keys: Option<Vec<AccessKey>>,
    log_retention_bytes: u64,
    /// MiB environments may hold together.
    memory_mb: u64,
}

/// One access key from a flag, the environment or the file; errors never show the secret.
fn access_key(id: &str, secret: &str, from: &str) -> Result<AccessKey> {
    if id.is_empty() || secret.is_empty() {
        bail!("{from}: an access key needs a non-empty access key id and secret");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{from}: access key id {id:?} must be letters and digits only");
    }
    Ok(AccessKey {
        access_key_id: id.to_owned(),
        secret: SecretKey::new(secret.to_owned()),
    })
}

/// The keys of `--auth sigv4`: the file's, then the flags' (or `LAMBOX_AUTH_KEYS`); a later
/// key with the same id wins.
fn resolve_auth(args: &ServeArgs, file: &FileAuth) -> Result<Option<Vec<AccessKey>>> {
    let mut keys = Vec::new();
    for k in &file.keys {
        keys.push(access_key(
            &k.access_key_id,
            &k.secret_access_key,
            "config file [[auth.keys]]",
        )?);
    }
    for (i, k) in args.auth_keys.iter().enumerate() {
        let Some((id, secret)) = k.0.split_once(':') else {
            bail!(
                "--auth-key / LAMBOX_AUTH_KEYS value {}: not ACCESS_KEY_ID:SECRET",
                i + 1
            );
        };
        keys.push(access_key(id, secret, "--auth-key / LAMBOX_AUTH_KEYS")?);
    }
    match args.auth.or(file.mode).unwrap_or_default() {
        AuthMode::None => Ok(None),
        AuthMode::Sigv4 if keys.is_empty() => bail!(
            "--auth sigv4 needs at least one access key: [[auth.keys]] in the config file, --auth-key ACCESS_KEY_ID:SECRET or LAMBOX_AUTH_KEYS"
        ),
        AuthMode::Sigv4 => {
            let mut seen = std::collections::HashSet::new();
            let mut unique: Vec<AccessKey> = keys
                .into_iter()
                .rev()
                .filter(|k| seen.insert(k.access_key_id.clone()))
                .collect();
            unique.reverse();
            Ok(Some(unique))
        }
    }
}

/// MemTotal of `/proc/meminfo`, in MiB.
fn machine_memory_mb() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .context("/proc/meminfo has no MemTotal in kB")
}

/// Events of one function running at once by default: two per CPU (see `Lambda::event_gate`).
fn default_async_concurrency() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32 * 2)
}

/// What environments may hold by default: MemTotal less the reserve.
fn default_memory_mb(total_mb: u64) -> u64 {
    total_mb.saturating_sub((total_mb / MEMORY_RESERVE_FRACTION).max(MEMORY_RESERVE_MIN_MB))
}

fn read_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config file {}: {}",
            path.display(),
            e.to_string().lines().collect::<Vec<_>>().join(" ")
        )
    })
}

fn resolve(data_dir_flag: Option<PathBuf>, args: &ServeArgs) -> Result<Settings> {
    let file = match &args.config {
        Some(p) => read_config(p)?,
        None => FileConfig::default(),
    };
    let listen = match args.listen.or(file.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let account_id = args
        .account_id
        .clone()
        .or(file.account_id)
        .unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("account id {account_id:?} is not 12 digits");
    }
    let region = args
        .region
        .clone()
        .or(file.region)
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    if lambox_api::names::FunctionRef::parse(
        &format!("{region}:{account_id}:function:x"),
        &account_id,
        &region,
        false,
    )
    .is_err()
    {
        bail!("region {region:?} is not a region name like us-east-1");
    }
    let account_concurrency = args
        .account_concurrency
        .or(file.limits.account_concurrency)
        .unwrap_or(DEFAULT_ACCOUNT_CONCURRENCY);
    if account_concurrency == 0 {
        bail!("account concurrency must be at least 1");
    }
    let idle = args
        .idle_timeout
        .or(file.limits.idle_timeout_seconds)
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
    let async_retry_delay_scale = args
        .async_retry_delay_scale
        .or(file.limits.async_retry_delay_scale)
        .unwrap_or(1.0);
    if !(async_retry_delay_scale > 0.0 && async_retry_delay_scale <= 1.0) {
        bail!("async retry delay scale {async_retry_delay_scale} is not in (0, 1]");
    }
    let async_concurrency = args
        .async_concurrency
        .or(file.limits.async_concurrency)
        .unwrap_or_else(default_async_concurrency);
    if async_concurrency == 0 {
        bail!("async concurrency must be at least 1");
    }
    let log_retention_bytes = args
        .log_retention_bytes
        .or(file.limits.log_retention_bytes)
        .unwrap_or(lambox_api::logs::DEFAULT_RETENTION_BYTES);
    if log_retention_bytes < lambox_api::logs::MIN_RETENTION_BYTES {
        bail!(
            "log retention {log_retention_bytes} bytes is below the minimum of {}",
            lambox_api::logs::MIN_RETENTION_BYTES
        );
    }
    let auth_keys = resolve_auth(args, &file.auth)?;
    let memory_mb = match args.memory_mb.or(file.limits.memory_mb) {
        Some(m) => m,
        None => default_memory_mb(machine_memory_mb()?),
    };
    if memory_mb < 128 {
        bail!("memory limit {memory_mb} MiB is below the smallest function (128 MiB)");
    }
    Ok(Settings {
        auth_keys,
        log_retention_bytes,
        idle_timeout: (idle > 0).then(|| Duration::from_secs(idle)),
        async_retry_delay_scale,
        async_concurrency,
        memory_mb,
        listen,
        data_dir: data_dir_flag
            .or(file.data_dir)
            .unwrap_or_else(Store::default_root),
        account_id,
        region,
        account_concurrency,
        grace: Duration::from_secs(
            args.shutdown_grace
                .or(file.limits.shutdown_grace_seconds)
                .unwrap_or(DEFAULT_GRACE_SECS),
        ),
    })
}

pub fn serve(
    data_dir_flag: Option<PathBuf>,
    max_image_size: u64,
    args: ServeArgs,
) -> Result<ExitCode> {
    let settings = resolve(data_dir_flag, &args)?;
    let store = Arc::new(
        Store::open(&settings.data_dir)
            .with_context(|| format!("open data directory {}", settings.data_dir.display()))?,
    );
    let state = State::open(&settings.data_dir)?;
    let logs = LogStore::open(&settings.data_dir, settings.log_retention_bytes)?;
    let images = Arc::new(
        StoreImages::new(store.clone(), max_image_size).with_local_registry(
            Arc::new(OwnRegistry(store.clone())),
            own_hosts(settings.listen),
        ),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let sandbox = Arc::new(SandboxHost::start(
        store.root().join("run"),
        &args.network,
        2,
        runtime.handle().clone(),
    )?);
    let host = sandbox.clone();
    let launchers: lambox_api::LauncherFactory =
        Arc::new(move |image| Arc::new(host.launcher(image.layers.clone())) as Arc<dyn Launcher>);
    let scheduler = Scheduler::new(
        images.clone(),
        launchers,
        // Function logs go to DATA/logs and, as before, to serve's stdout.
        Arc::new(logs.sink(Some(Arc::new(StdoutLogSink)))),
        settings.account_id.clone(),
        settings.region.clone(),
        settings.account_concurrency as usize,
    )
    .with_idle_timeout(settings.idle_timeout)
    .with_memory_limit(Some(settings.memory_mb));
    let config = ServiceConfig {
        account_id: settings.account_id.clone(),
        region: settings.region.clone(),
        account_concurrency: settings.account_concurrency,
        async_retry_delay_scale: settings.async_retry_delay_scale,
        async_concurrency: settings.async_concurrency,
    };

    let registry_store = store.clone();
    // An authenticated server is authenticated everywhere: SigV4 on the Lambda and ECR APIs,
    // GetAuthorizationToken's tokens on /v2/.
    let verifier = settings
        .auth_keys
        .clone()
        .map(|keys| Arc::new(sigv4::Verifier::new(keys, &settings.region)));
    let registry_auth = args.registry_auth || verifier.is_some();
    let registry_vuln_db = args.registry_vuln_db.clone();
    let served = runtime.block_on(async move {
        let lambda = Lambda::new(config, state, images, scheduler);
        let resumed = lambda.resume_events()?;
        if resumed > 0 {
            tracing::info!(events = resumed, "resuming events accepted before the last stop");
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listen on {}", settings.listen))?;
        eprintln!(
            "lambox: Lambda API, registry (/v2/) and ECR API on http://{} (account {}, region {}, data {}); {}",
            settings.listen,
            settings.account_id,
            settings.region,
            settings.data_dir.display(),
            match (&settings.auth_keys, registry_auth) {
                (Some(keys), _) => format!(
                    "the Lambda and ECR APIs need AWS Signature V4 with one of {} access key(s) ({}); /v2/ needs a token from GetAuthorizationToken",
                    keys.len(),
                    keys.iter()
                        .map(|k| k.access_key_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (None, true) => "the Lambda and ECR APIs accept any credentials; /v2/ needs a token from GetAuthorizationToken".to_owned(),
                (None, false) => "requests are not authenticated: any credentials are accepted".to_owned(),
            }
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // One port: the Lambda API, the registry's `/v2/` API, and on `POST /` the ECR and
        // CloudWatch Logs JSON APIs (by `X-Amz-Target`).
        let registry = lambox_registry::Registry::new(
            registry_store,
            lambox_registry::RegistryConfig {
                auth: registry_auth,
                vuln_db: registry_vuln_db,
                ..Default::default()
            },
        );
        registry.spawn_upload_reaper();
        let lambda_guard = verifier.clone().map(|v| {
            sigv4::Guard::new(v, sigv4::SERVICE_LAMBDA, sigv4::AuthError::lambda_response)
        });
        let mut ecr = lambox_registry::ecr::router(&registry);
        let mut logs_api =
            lambox_api::logs_api::router(logs, &settings.account_id, &settings.region);
        if let Some(v) = verifier {
            // Both speak awsJson1.1: refusals in ECR's `{"__type","message"}` shape.
            let json_error = |e: &sigv4::AuthError| {
                lambox_registry::ecr::error_response(
                    axum::http::StatusCode::FORBIDDEN,
                    e.code(),
                    &e.to_string(),
                )
            };
            ecr = sigv4::Guard::new(v.clone(), sigv4::SERVICE_ECR, json_error).wrap(ecr);
            logs_api = sigv4::Guard::new(v, sigv4::SERVICE_LOGS, json_error).wrap(logs_api);
        }
        let app = lambox_api::router_with_auth(lambda.clone(), lambda_guard)
            .merge(registry.router())
            .merge(json_apis(ecr, logs_api));
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(());
            });
        let grace = settings.grace;
        let started = std::time::Instant::now();
        tokio::select! {
            r = server => r.context("serve")?,
            _ = async move {
                let _ = stop_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("requests still running after the grace period; stopping anyway");
            }
        }
        let left = lambda
            .drain(grace.saturating_sub(started.elapsed().min(grace)))
            .await;
        if left > 0 {
            tracing::warn!(tasks = left, "background work still running; pending events run at the next start");
        }
        lambda.shutdown();
        drop(lambda);
        // Give environments a moment to be torn down (their Drop kills and cleans up).
        tokio::time::sleep(Duration::from_millis(200)).await;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Also after an error: the helpers, lambox's cgroups and the host network are undone
    // (every launcher, holding the other references, has gone with the scheduler).
    match Arc::try_unwrap(sandbox) {
        Ok(sandbox) => sandbox.shutdown(),
        Err(_) => lambox_sandbox::remove_empty_cgroups(),
    }
    served?;
    eprintln!("lambox: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `POST /` of the JSON 1.1 APIs: the `X-Amz-Target` prefix picks CloudWatch Logs, anything
/// else goes to ECR (which answers unknown targets).
fn json_apis(ecr: axum::Router, logs: axum::Router) -> axum::Router {
    use tower::ServiceExt as _;
    let dispatch = move |req: axum::extract::Request| async move {
        let logs_target = req
            .headers()
            .get(lambox_api::logs_api::TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(lambox_api::logs_api::TARGET_PREFIX));
        let api = if logs_target { logs } else { ecr };
        match api.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    };
    axum::Router::new().route("/", axum::routing::post(dispatch))
}

/// The registry mounted on serve's port, for function images: ECR URIs and URIs naming
/// lambox's own address take the pushed image from the store (no HTTP to itself, no copy).
#[derive(Debug)]
struct OwnRegistry(Arc<Store>);

impl lambox_api::LocalRegistry for OwnRegistry {
    fn has_repository(&self, repo: &str) -> bool {
        self.0
            .with_db(|db| lambox_registry::meta::repo_exists(db, repo))
            .unwrap_or(false)
    }

    fn open(
        &self,
        repo: &str,
        reference: &str,
    ) -> std::result::Result<Box<dyn lambox_image::source::BlobSource>, lambox_image::Error> {
        let image = lambox_registry::source::PushedImage::open(self.0.clone(), repo, reference)?;
        Ok(Box::new(image))
    }
}

/// `host:port` spellings of the listen address that clients use in image URIs.
fn own_hosts(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    let mut hosts = Vec::new();
    if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        hosts.push(format!("127.0.0.1:{port}"));
        hosts.push(format!("localhost:{port}"));
    }
    if !listen.ip().is_unspecified() {
        hosts.push(listen.to_string());
    }
    hosts.dedup();
    hosts
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The function's name
    pub function: String,
    /// Only events that failed for good (retries exhausted, too old, function gone)
    #[arg(long)]
    pub failed: bool,
    /// JSON (one array) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Read the data directory (--data-dir, or the data_dir of --config) instead of asking
    /// lambox serve; works while it is stopped
    #[arg(long)]
    pub offline: bool,
    /// With --offline: `lambox serve`'s configuration file, for its data_dir
    #[arg(long, env = "LAMBOX_CONFIG", requires = "offline")]
    config: Option<PathBuf>,
    #[command(flatten)]
    pub endpoint: crate::client::EndpointArgs,
}

/// `lambox events FUNCTION --offline [--failed] [--json]`: reads the data directory's state
/// database (safe while `lambox serve` runs: SQLite WAL readers do not block it).
pub fn events_offline(data_dir_flag: Option<PathBuf>, args: EventsArgs) -> Result<ExitCode> {
    let file_dir = match &args.config {
        Some(p) => read_config(p)?.data_dir,
        None => None,
    };
    let dir = data_dir_flag
        .or(file_dir)
        .unwrap_or_else(Store::default_root);
    if !dir.join("lambox-api.db").is_file() {
        bail!(
            "data directory {} has no lambox serve state (lambox-api.db)",
            dir.display()
        );
    }
    let state = State::open(&dir)?;
    let events = state.events(&args.function, args.failed.then_some("failed"))?;
    if events.is_empty() && state.latest(&args.function)?.is_none() {
        bail!("function {} not found and has no events", args.function);
    }
    print_events(&events, args.json)
}

/// `lambox events`' output: a table, or the events as one JSON array.
pub fn print_events(events: &[lambox_api::state::EventSummary], json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&events)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<9}  {:<8}  {:>8}  {:<24}  ERROR",
        "EVENT ID", "STATUS", "VERSION", "ATTEMPTS", "RECEIVED (UTC)"
    );
    for e in events {
        let error = e.error.as_deref().unwrap_or("").replace('\n', " ");
        println!(
            "{:<36}  {:<9}  {:<8}  {:>8}  {:<24}  {}",
            e.event_id,
            e.status,
            e.qualifier,
            e.attempts,
            utc(e.received_ms),
            error
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from milliseconds since the epoch.
fn utc(ms: u64) -> String {
    lambox_api::logs::utc(i64::try_from(ms).unwrap_or(i64::MAX))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    eprintln!("lambox: shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            config,
            listen: None,
            account_id: None,
            region: None,
            account_concurrency: None,
            shutdown_grace: None,
            idle_timeout: None,
            async_retry_delay_scale: None,
            async_concurrency: None,
            memory_mb: None,
            registry_auth: false,
            auth: None,
            auth_keys: Vec::new(),
            registry_vuln_db: None,
            log_retention_bytes: None,
            network: NetworkArgs::default(),
        }
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let s = resolve(Some("/d".into()), &args(None)).expect("ok");
        assert_eq!(s.listen, "127.0.0.1:4566".parse().expect("ok"));
        assert_eq!(s.account_id, "000000000000");
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.account_concurrency, 1000);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(s.async_retry_delay_scale, 1.0);
        assert_eq!(s.async_concurrency, default_async_concurrency());
        let total = machine_memory_mb().expect("MemTotal");
        assert_eq!(s.memory_mb, default_memory_mb(total));
        assert!(s.memory_mb + 512 <= total, "{} of {total}", s.memory_mb);

        let dir = tempfile::tempdir().expect("ok");
        let file = dir.path().join("lambox.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:5000\"\ndata_dir = \"/srv/lambox\"\naccount_id = \"123456789012\"\nregion = \"eu-west-1\"\n[limits]\naccount_concurrency = 10\nshutdown_grace_seconds = 5\nidle_timeout_seconds = 0\nasync_retry_delay_scale = 0.5\nmemory_mb = 2048\nasync_concurrency = 3\n",
        )
        .expect("ok");
        let s = resolve(None, &args(Some(file.clone()))).expect("ok");
        assert_eq!(s.listen, "127.0.0.1:5000".parse().expect("ok"));
        assert_eq!(s.data_dir, PathBuf::from("/srv/lambox"));
        assert_eq!(s.account_id, "123456789012");
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.account_concurrency, 10);
        assert_eq!(s.grace, Duration::from_secs(5));
        assert_eq!(s.idle_timeout, None);
        assert_eq!(s.async_retry_delay_scale, 0.5);
        assert_eq!(s.memory_mb, 2048);
        assert_eq!(s.async_concurrency, 3);

        let mut a = args(Some(file));
        a.region = Some("ap-south-1".into());
        a.account_concurrency = Some(7);
        a.idle_timeout = Some(30);
        a.memory_mb = Some(300);
        let s = resolve(Some("/flag".into()), &a).expect("ok");
        assert_eq!(s.memory_mb, 300);
        assert_eq!(s.region, "ap-south-1");
        assert_eq!(s.account_concurrency, 7);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.data_dir, PathBuf::from("/flag"));
    }

    #[test]
    fn auth_mode_and_keys_from_file_and_flags() {
        assert_eq!(resolve(None, &args(None)).expect("ok").auth_keys, None);
        let dir = tempfile::tempdir().expect("ok");
        let file = dir.path().join("lambox.toml");
        std::fs::write(
            &file,
            "[auth]\nmode = \"sigv4\"\n[[auth.keys]]\naccess_key_id = \"AKIDFILE\"\nsecret_access_key = \"file-secret\"\n",
        )
        .expect("ok");
        let mut a = args(Some(file.clone()));
        a.auth_keys = vec![
            KeyArg("AKIDFLAG:flag:secret".into()),
            KeyArg("AKIDFILE:newer".into()),
        ];
        let s = resolve(None, &a).expect("ok");
        let keys = s.auth_keys.clone().expect("sigv4");
        let ids: Vec<&str> = keys.iter().map(|k| k.access_key_id.as_str()).collect();
        assert_eq!(ids, ["AKIDFLAG", "AKIDFILE"]);
        assert_eq!(keys[0].secret, SecretKey::new("flag:secret".into()));
        assert_eq!(keys[1].secret, SecretKey::new("newer".into()));
        for secret in ["file-secret", "flag:secret", "newer"] {
            assert!(!format!("{s:?}").contains(secret), "{s:?}");
        }
        // A flag turns it off again.
        a.auth = Some(AuthMode::None);
        assert_eq!(resolve(None, &a).expect("ok").auth_keys, None);

        let mut a = args(None);
        a.auth = Some(AuthMode::Sigv4);
        let e = resolve(None, &a).expect_err("no keys").to_string();
        assert!(e.contains("at least one access key"), "{e}");
        a.auth_keys = vec![KeyArg("no-colon-hunter2".into())];
        let e = resolve(None, &a).expect_err("malformed").to_string();
        assert!(
            e.contains("ACCESS_KEY_ID:SECRET") && !e.contains("hunter2"),
            "{e}"
        );
        a.auth_keys = vec![KeyArg("AKID/x:hunter2".into())];
        let e = resolve(None, &a).expect_err("bad id").to_string();
        assert!(
            e.contains("letters and digits") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn utc_formats_epoch_milliseconds() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        let dir = tempfile::tempdir().expect("ok");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:5000\"\nlisten_typo = 1\n").expect("ok");
        let e = resolve(None, &args(Some(file)))
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("bad.toml") && !e.contains('\n'), "{e}");
        let mut a = args(None);
        a.account_id = Some("12".into());
        assert!(resolve(None, &a)
            .expect_err("must fail")
            .to_string()
            .contains("12 digits"));
        let mut a = args(None);
        a.region = Some("Mars".into());
        assert!(resolve(None, &a)
            .expect_err("must fail")
            .to_string()
            .contains("region"));
        let mut a = args(None);
        a.async_retry_delay_scale = Some(0.0);
        assert!(resolve(None, &a)
            .expect_err("must fail")
            .to_string()
            .contains("scale"));
        let mut a = args(None);
        a.memory_mb = Some(100);
        assert!(resolve(None, &a)
            .expect_err("must fail")
            .to_string()
            .contains("memory limit 100 MiB"));
    }

    #[test]
    fn the_default_memory_leaves_a_reserve() {
        assert_eq!(default_memory_mb(24_000), 21_000);
        assert_eq!(default_memory_mb(2048), 1536);
        assert_eq!(default_memory_mb(256), 0);
    }
}
