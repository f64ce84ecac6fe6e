//! `lambox run IMAGE`: one function from one image, behind the Lambda Invoke API on
//! 127.0.0.1:9000 — a drop-in for `docker run -p 9000:8080 IMAGE` plus the runtime interface
//! emulator, with real isolation, concurrency and Lambda's error semantics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use lambox_runtime::config::{AwsCredentials, FunctionConfig, ImageConfig};
use lambox_runtime::logs::StdoutLogSink;
use lambox_runtime::pool::{Pool, PoolOptions};
use lambox_sandbox::SandboxConfig;

use crate::commands::{find_or_import, Ctx, ImageConfigArgs, ImportArgs};
use crate::launcher::SandboxLauncher;

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
    /// A file of KEY=VALUE lines (# comments and blank lines ignored)
    #[arg(long)]
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
    #[command(flatten)]
    import: ImportArgs,
}

fn parse_env_item(item: &str, origin: &str) -> Result<(String, String)> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{origin}: {item:?} is not KEY=VALUE"),
    }
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
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            function
                .env
                .push(parse_env_item(line, &file.display().to_string())?);
        }
    }
    for item in &args.env {
        function.env.push(parse_env_item(item, "--env")?);
    }
    function.credentials = AwsCredentials::from_process_env();
    function
        .validate()
        .context("invalid function configuration")?;

    let launcher = SandboxLauncher {
        config: SandboxConfig::new(ctx.store.root().join("run")),
        layers: entry
            .image
            .layers
            .iter()
            .map(|l| ctx.store.layer_path(&l.diff_id))
            .collect(),
    };
    let options = PoolOptions {
        concurrency: args.concurrency.max(1),
        queue_capacity: args.queue,
        ..PoolOptions::default()
    };
    let pool = Pool::new(
        function,
        Arc::new(launcher),
        Arc::new(StdoutLogSink),
        options,
    )
    .context("invalid function configuration")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let name = entry.names.first().cloned().unwrap_or_else(|| entry.image.digest.to_string());
        eprintln!(
            "lambox: serving {name} as function {:?} on http://{}/2015-03-31/functions/{}/invocations",
            args.function_name, args.listen, args.function_name
        );
        let router = lambox_runtime::invoke_api::invoke_router(pool.clone());
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serve")?;
        pool.shutdown();
        drop(pool);
        // Give environments a moment to be torn down (their Drop kills and cleans up).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        anyhow::Ok(())
    })?;
    lambox_sandbox::remove_empty_cgroups();
    Ok(ExitCode::SUCCESS)
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
