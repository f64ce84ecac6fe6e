//! `lambox`: a self-hosted AWS Lambda for container-image functions.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod client;
mod commands;
mod launcher;
mod progress;
mod run;
mod serve;

/// Self-hosted AWS Lambda for container-image functions, without a Docker daemon.
#[derive(Debug, Parser)]
#[command(name = "lambox", version, about)]
struct Cli {
    /// Where images and state live [default: /var/lib/lambox for root, else ~/.local/share/lambox]
    #[arg(long, global = true, env = "LAMBOX_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Largest uncompressed image accepted, in bytes (Lambda's limit, 10 GB, is the default)
    #[arg(long, global = true, env = "LAMBOX_MAX_IMAGE_SIZE", default_value_t = lambox_image::LAMBDA_MAX_IMAGE_SIZE)]
    max_image_size: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull an image from a registry: HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]
    Pull(commands::PullArgs),
    /// Load an image from docker-archive:PATH, oci:PATH[:TAG] or oci-archive:PATH[:TAG]
    Load(commands::LoadArgs),
    /// List stored images
    Images(commands::ImagesArgs),
    /// Show a stored image as JSON
    Inspect(commands::InspectArgs),
    /// Remove an image (or one of its names)
    Rmi(commands::RmiArgs),
    /// Remove unreferenced blobs and layers, and leftovers of interrupted imports
    Prune,
    /// Check an image against what Lambda would refuse or fail to run
    Lint(commands::LintArgs),
    /// Run a function from an image behind the Lambda Invoke API (default 127.0.0.1:9000)
    Run(run::RunArgs),
    /// Serve the Lambda API (functions, versions, aliases, invoke) on 127.0.0.1:4566
    Serve(serve::ServeArgs),
    /// List a function's async events (and why the failed ones failed), from lambox serve or (--offline) the data directory
    Events(serve::EventsArgs),
    /// Invoke a function of a running lambox serve; prints the response payload
    Invoke(client::InvokeArgs),
    /// List the functions of a running lambox serve
    Functions(client::FunctionsArgs),
    /// Print a function's log from a running lambox serve (--follow for new lines)
    Logs(client::LogsArgs),
}

fn main() -> ExitCode {
    // The sandbox re-executes lambox as the init of each environment: that must happen before
    // anything else (in particular before any thread starts).
    lambox_sandbox::run_init_if_requested();
    let cli = Cli::parse();
    // `serve` is a server: it logs its requests (with their ids) by default.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAMBOX_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain joined, as every error in lambox is one line.
            let msg = e
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("lambox: error: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Serve(a) = cli.command {
        // The data directory may come from serve's config file: serve opens it itself.
        return serve::serve(cli.data_dir, cli.max_image_size, a);
    }
    let command = match cli.command {
        Command::Events(a) if a.offline => return serve::events_offline(cli.data_dir, a),
        Command::Events(a) => return client::events(a),
        // Clients of serve's API: no data directory.
        Command::Invoke(a) => return client::invoke(a),
        Command::Functions(a) => return client::functions(a),
        Command::Logs(a) => return client::logs(a),
        other => other,
    };
    let root = cli
        .data_dir
        .clone()
        .unwrap_or_else(lambox_image::store::Store::default_root);
    let store = lambox_image::store::Store::open(&root)
        .with_context(|| format!("open data directory {}", root.display()))?;
    let ctx = commands::Ctx {
        store,
        max_image_size: cli.max_image_size,
    };
    match command {
        Command::Pull(a) => commands::pull(&ctx, a),
        Command::Load(a) => commands::load(&ctx, a),
        Command::Images(a) => commands::images(&ctx, a),
        Command::Inspect(a) => commands::inspect(&ctx, a),
        Command::Rmi(a) => commands::rmi(&ctx, a),
        Command::Prune => commands::prune(&ctx),
        Command::Lint(a) => commands::lint(&ctx, a),
        Command::Run(a) => run::run(&ctx, a),
        Command::Serve(_)
        | Command::Events(_)
        | Command::Invoke(_)
        | Command::Functions(_)
        | Command::Logs(_) => unreachable!("handled above"),
    }
}
