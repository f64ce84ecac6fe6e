//! `lambox run IMAGE`: one function from one image, behind the Lambda Invoke API on
//! 127.0.0.1:9000 — a drop-in for `docker run -p 9000:8080 IMAGE` plus the runtime interface
//! emulator, with real isolation, concurrency and Lambda's error semantics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use lambox_runtime::config::{AwsCredentials, FunctionConfig, ImageConfig};
use lambox_runtime::logs::StdoutLogSink;
use lambox_runtime::pool::{Pool, PoolOptions};

use crate::commands::{find_or_import, Ctx, ImageConfigArgs, ImportArgs};
use crate::launcher::{NetworkArgs, SandboxHost};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A stored image (name, digest or prefix), or any source to pull/load first
    image: String,
    /// Where the Invoke API listens
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    #[command(flatten)]
    overrides: ImageConfigArgs,
    /// An environment variable for the function, KEY=VALUE (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A file of environment variables, as `docker run --env-file` reads it: KEY=VALUE
    /// lines (the value verbatim), KEY alone takes lambox's own value, # comments and
    /// blank lines ignored (repeatable; -e wins over files, later files over earlier)
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Memory size, MB (128–10240); also the CPU share (1769 MB = 1 vCPU)
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// Timeout, seconds (1–900)
    #[arg(long, default_value_t = 3)]
    timeout: u32,
    /// Size of /tmp, MB (512–10240)
    #[arg(long, default_value_t = 512)]
    ephemeral_storage: u32,
    /// Execution environments at most; further invokes wait in a queue
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Invokes that may wait for an environment before further ones get 429
    #[arg(long, default_value_t = 1000)]
    queue: usize,
    /// The function's name (AWS_LAMBDA_FUNCTION_NAME)
    #[arg(long, default_value = "function")]
    function_name: String,
    /// Tear an environment down after it has been idle this long, seconds (0: never)
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    idle_timeout: u64,
    /// On SIGTERM/Ctrl-C, how long running invokes may take to finish before their
    /// environments are killed, seconds (a second signal kills them at once)
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    shutdown_grace: u64,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    import: ImportArgs,
}

/// `-e KEY=VALUE`, or `-e KEY` for lambox's own value of KEY (skipped when unset), as
/// `docker run -e` reads them.
fn parse_env_item(
    item: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Some((k.to_string(), v.to_string()))),
        None if !item.is_empty() => Ok(lookup(item).map(|v| (item.to_string(), v))),
        _ => bail!("--env: {item:?} is not KEY=VALUE or KEY"),
    }
}

/// Lambda's rule for variable names (`ConfigError::InvalidEnvKey`): a letter, then at least
/// one letter, digit or `_`.
fn env_key_ok(key: &str) -> bool {
    let mut bytes = key.bytes();
    key.len() >= 2
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses an env file as `docker run --env-file` does: leading whitespace is dropped; blank
/// lines and lines starting with `#` are skipped; `KEY=VALUE` keeps VALUE verbatim (quotes and
/// trailing spaces included); a bare `KEY` takes `lookup(KEY)` and is skipped when that is
/// unset. Errors name the file and line.
fn parse_env_file(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            bail!("{}: no variable name before '=' in {line:?}", at());
        }
        if key.chars().any(char::is_whitespace) {
            bail!("{}: variable name {key:?} contains whitespace", at());
        }
        if !env_key_ok(key) {
            bail!(
                "{}: invalid variable name {key:?}: a letter, then letters, digits or '_'",
                at()
            );
        }
        match value {
            Some(v) => vars.push((key.to_string(), v.to_string())),
            None => {
                if let Some(v) = lookup(key) {
                    vars.push((key.to_string(), v));
                }
            }
        }
    }
    Ok(vars)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(ctx: &Ctx, args: RunArgs) -> Result<ExitCode> {
    let entry = find_or_import(ctx, &args.image, &args.import)?;
    let config_bytes = ctx.store.read_blob(&entry.image.config_digest)?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("parse config {}", entry.image.config_digest))?;
    let c = &config["config"];
    // ImageConfig overrides replace the image's values, as Lambda's ImageConfig does.
    let image = ImageConfig {
        entrypoint: args
            .overrides
            .entrypoint
            .unwrap_or_else(|| strings(&c["Entrypoint"])),
        cmd: args.overrides.cmd.unwrap_or_else(|| strings(&c["Cmd"])),
        workdir: args.overrides.workdir.or_else(|| {
            c["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(str::to_string)
        }),
        env: ImageConfig::parse_env(&strings(&c["Env"])),
    };
    let mut function = FunctionConfig::new(args.function_name.clone(), image);
    function.memory_mb = args.memory;
    function.timeout_secs = args.timeout;
    function.ephemeral_storage_mb = args.ephemeral_storage;
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read env file {}", file.display()))?;
        function
            .env
            .extend(parse_env_file(file, &text, |k| std::env::var(k).ok())?);
    }
    for item in &args.env {
        function
            .env
            .extend(parse_env_item(item, |k| std::env::var(k).ok())?);
    }
    function.credentials = AwsCredentials::from_process_env();
    function
        .validate()
        .context("invalid function configuration")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let sandbox = SandboxHost::start(
        ctx.store.root().join("run"),
        &args.network,
        args.concurrency.clamp(1, 2),
        runtime.handle().clone(),
    )?;
    let launcher = sandbox.launcher(
        entry
            .image
            .layers
            .iter()
            .map(|l| ctx.store.layer_path(&l.diff_id))
            .collect(),
    );
    let options = PoolOptions {
        concurrency: args.concurrency.max(1),
        queue_capacity: args.queue,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        ..PoolOptions::default()
    };
    let grace = Duration::from_secs(args.shutdown_grace);
    let pool = Pool::new(
        function,
        Arc::new(launcher),
        Arc::new(StdoutLogSink),
        options,
    )
    .context("invalid function configuration")?;

    let served = runtime.block_on(async move {
        // Installed before listening: a signal is never the default (fatal) action from here.
        let mut signals = Signals::new()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let name = entry.names.first().cloned().unwrap_or_else(|| entry.image.digest.to_string());
        eprintln!(
            "lambox: serving {name} as function {:?} on http://{}/2015-03-31/functions/{}/invocations",
            args.function_name, args.listen, args.function_name
        );
        let router = lambox_runtime::invoke_api::invoke_router(pool.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stop_rx.await;
        });
        let mut serve = tokio::spawn(async move { serving.await });
        tokio::select! {
            served = &mut serve => {
                served.context("serve")?.context("serve")?;
                bail!("the invoke API stopped");
            }
            () = signals.recv() => {}
        }
        // Stop accepting connections and invokes; running invokes finish within the grace
        // period and their callers get their responses; then every environment is torn down.
        let _ = stop_tx.send(());
        eprintln!(
            "lambox: shutting down: {} invokes running, waiting up to {} s",
            pool.in_flight(),
            grace.as_secs()
        );
        tokio::select! {
            finished = pool.shutdown_gracefully(grace) => {
                if !finished {
                    eprintln!("lambox: invokes still running after {} s were stopped", grace.as_secs());
                }
            }
            () = signals.recv() => {
                eprintln!("lambox: second signal: stopping running invokes now");
                pool.shutdown_gracefully(Duration::ZERO).await;
            }
        }
        // The answers of the last invokes are written before the connections close.
        if tokio::time::timeout(Duration::from_secs(5), &mut serve).await.is_err() {
            serve.abort();
        }
        drop(pool);
        anyhow::Ok(())
    });
    // Also after an error: the helpers, lambox's cgroups and the host network are undone.
    sandbox.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>> {
        parse_env_file(Path::new("vars.env"), text, |k| {
            (k == "FROM_HOST").then(|| "host value".to_string())
        })
    }

    #[test]
    fn env_files_read_as_docker_reads_them() {
        let text = "\u{feff}# a comment\n\n  A1=x\nQUOTED=\"q\" \nEMPTY=\nEQ=a=b\n  # indented comment\nFROM_HOST\nUNSET_ON_HOST\n";
        let vars = parse(text).expect("valid");
        let want = [
            ("A1", "x"),
            ("QUOTED", "\"q\" "),
            ("EMPTY", ""),
            ("EQ", "a=b"),
            ("FROM_HOST", "host value"),
        ];
        assert_eq!(
            vars,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
    }

    #[test]
    fn env_flags_read_as_docker_reads_them() {
        let lookup = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        let item = |i: &str| parse_env_item(i, lookup);
        let pair = |k: &str, v: &str| Some((k.to_string(), v.to_string()));
        assert_eq!(item("A=b=c").expect("valid"), pair("A", "b=c"));
        assert_eq!(item("A=").expect("valid"), pair("A", ""));
        assert_eq!(item("FROM_HOST").expect("valid"), pair("FROM_HOST", "h"));
        assert_eq!(item("UNSET").expect("valid"), None);
        assert_eq!(
            item("=x").expect_err("invalid").to_string(),
            "--env: \"=x\" is not KEY=VALUE or KEY"
        );
    }

    #[test]
    fn bad_env_file_lines_name_the_file_and_line() {
        let err = |t: &str| parse(t).expect_err("invalid").to_string();
        assert_eq!(
            err("OK=1\n=value\n"),
            "vars.env:2: no variable name before '=' in \"=value\""
        );
        assert_eq!(
            err("# c\nMY VAR=1\n"),
            "vars.env:2: variable name \"MY VAR\" contains whitespace"
        );
        assert_eq!(
            err("\n\n1X=1"),
            "vars.env:3: invalid variable name \"1X\": a letter, then letters, digits or '_'"
        );
    }
}
