//! The image verbs: pull, load, images, inspect, rmi, prune, lint.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use lambox_image::import::{import, ImportOptions, ImportOutcome};
use lambox_image::manifest::Platform;
use lambox_image::source::{RegistryOptions, Source};
use lambox_image::store::{ImageEntry, Store};

use crate::progress::Reporter;

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    pub store: Store,
    pub max_image_size: u64,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Pick one platform of a multi-platform image: linux/amd64 or linux/arm64
    #[arg(long)]
    platform: Option<Platform>,
    /// Use plain HTTP for the registry even if it is not on a loopback address
    #[arg(long)]
    plain_http: bool,
    /// Registry user name (else from the auth file)
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Registry password or token
    #[arg(
        long,
        requires = "username",
        env = "LAMBOX_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Registry auth file [default: $REGISTRY_AUTH_FILE, else ~/.docker/config.json]
    #[arg(long)]
    auth_file: Option<std::path::PathBuf>,
    /// Layers fetched and unpacked at once
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// No progress output
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]
    reference: String,
    #[command(flatten)]
    import: ImportArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// docker-archive:PATH, oci:PATH[:TAG] or oci-archive:PATH[:TAG]
    source: String,
    /// Name to store the image under (e.g. localhost/hello:latest)
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    import: ImportArgs,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Name, digest or digest prefix
    image: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Name, digest or digest prefix
    #[arg(required = true)]
    images: Vec<String>,
}

/// Lambda's ImageConfig: overrides of the image's ENTRYPOINT, CMD and WORKDIR.
#[derive(Debug, Args)]
pub struct ImageConfigArgs {
    /// Override the image ENTRYPOINT, as Lambda's ImageConfig.EntryPoint (one or more words)
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub entrypoint: Option<Vec<String>>,
    /// Override the image CMD, as Lambda's ImageConfig.Command (one or more words)
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub cmd: Option<Vec<String>>,
    /// Override the image WORKDIR, as Lambda's ImageConfig.WorkingDirectory
    #[arg(long)]
    pub workdir: Option<String>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// A stored image (name, digest or prefix), or a source to import first
    image: String,
    #[command(flatten)]
    overrides: ImageConfigArgs,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    import: ImportArgs,
}

fn run_import(
    ctx: &Ctx,
    source: &Source,
    name: Option<String>,
    args: &ImportArgs,
) -> Result<ImportOutcome> {
    let options = RegistryOptions {
        plain_http: args.plain_http,
        username: args.username.clone(),
        password: args.password.clone(),
        auth_file: args.auth_file.clone(),
    };
    let src = source.open(&options)?;
    let name = name.or_else(|| match source {
        Source::Registry(r) => r.tagged_name(),
        _ => src.default_name(),
    });
    let opts = ImportOptions {
        platform: args.platform.clone(),
        max_size: ctx.max_image_size,
        name,
        jobs: args.jobs.max(1),
    };
    let reporter = Reporter::new(args.quiet);
    let outcome = import(
        &ctx.store,
        src.as_ref(),
        &source.to_string(),
        &opts,
        &reporter,
    )?;
    if !args.quiet {
        eprintln!(
            "stored {} ({}, {}/{}): {} layers, {} bytes fetched, {} already stored",
            outcome.name.as_deref().unwrap_or("<unnamed>"),
            outcome.image.digest,
            outcome.image.os,
            outcome.image.architecture,
            outcome.image.layers.len(),
            outcome.fetched_bytes,
            outcome.reused_layers
        );
    }
    Ok(outcome)
}

pub fn pull(ctx: &Ctx, args: PullArgs) -> Result<ExitCode> {
    let source: Source = args.reference.parse()?;
    if !matches!(source, Source::Registry(_)) {
        bail!(
            "{} is not a registry reference: use `lambox load` for archives and layouts",
            args.reference
        );
    }
    let outcome = run_import(ctx, &source, None, &args.import)?;
    println!("{}", outcome.image.digest);
    Ok(ExitCode::SUCCESS)
}

pub fn load(ctx: &Ctx, args: LoadArgs) -> Result<ExitCode> {
    let source: Source = args.source.parse()?;
    let outcome = run_import(ctx, &source, args.tag, &args.import)?;
    println!("{}", outcome.image.digest);
    Ok(ExitCode::SUCCESS)
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn images(ctx: &Ctx, args: ImagesArgs) -> Result<ExitCode> {
    let all = ctx.store.images()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<50} {:<14} {:<14} {:>10}",
        "NAME", "IMAGE ID", "PLATFORM", "SIZE"
    );
    for e in &all {
        let names: Vec<&str> = if e.names.is_empty() {
            vec!["<none>"]
        } else {
            e.names.iter().map(String::as_str).collect()
        };
        for n in names {
            println!(
                "{:<50} {:<14} {:<14} {:>10}",
                n,
                e.image.digest.short(),
                format!("{}/{}", e.image.os, e.image.architecture),
                human(e.image.uncompressed_size())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The image config as a JSON value (the stored blob, verified at import).
fn config_json(store: &Store, e: &ImageEntry) -> Result<serde_json::Value> {
    let bytes = store.read_blob(&e.image.config_digest)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("parse config {}", e.image.config_digest))
}

pub fn inspect(ctx: &Ctx, args: InspectArgs) -> Result<ExitCode> {
    let e = ctx.store.find(&args.image)?;
    let config = config_json(&ctx.store, &e)?;
    let c = &config["config"];
    let layers: Vec<_> = e
        .image
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "Digest": l.digest, "DiffId": l.diff_id, "MediaType": l.media_type,
                "Size": l.size, "UncompressedSize": l.uncompressed_size,
            })
        })
        .collect();
    let out = serde_json::json!({
        "Digest": e.image.digest,
        "Names": e.names,
        "MediaType": e.image.media_type,
        "ConfigDigest": e.image.config_digest,
        "Os": e.image.os,
        "Architecture": e.image.architecture,
        "Entrypoint": c.get("Entrypoint").cloned().unwrap_or(serde_json::Value::Null),
        "Cmd": c.get("Cmd").cloned().unwrap_or(serde_json::Value::Null),
        "WorkingDir": c.get("WorkingDir").cloned().unwrap_or(serde_json::Value::Null),
        "Env": c.get("Env").cloned().unwrap_or(serde_json::Value::Null),
        "User": c.get("User").cloned().unwrap_or(serde_json::Value::Null),
        "Created": config.get("created").cloned().unwrap_or(serde_json::Value::Null),
        "Layers": layers,
        "Size": e.image.uncompressed_size(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(ctx: &Ctx, args: RmiArgs) -> Result<ExitCode> {
    for image in &args.images {
        let (names, gone) = ctx.store.remove(image)?;
        for n in names {
            println!("untagged: {n}");
        }
        if let Some(d) = gone {
            println!("deleted: {d}");
        }
    }
    let (_, stats) =
        lambox_registry::gc::collect(&ctx.store, lambox_registry::gc::UNCLAIMED_GRACE)?;
    eprintln!("freed {} blobs and {} layers", stats.blobs, stats.layers);
    Ok(ExitCode::SUCCESS)
}

/// The store's and the registry's garbage (see `lambox_registry::gc`): what `lambox serve`
/// collects by itself after deletions, plus leftovers of interrupted imports.
pub fn prune(ctx: &Ctx) -> Result<ExitCode> {
    let (links, stats) =
        lambox_registry::gc::collect(&ctx.store, lambox_registry::gc::UNCLAIMED_GRACE)?;
    println!(
        "removed {} blobs, {} layers, {} leftovers of interrupted imports, {} registry links no image needs",
        stats.blobs, stats.layers, stats.temps, links
    );
    Ok(ExitCode::SUCCESS)
}

/// A stored image, or else import `image` as a source.
pub fn find_or_import(ctx: &Ctx, image: &str, args: &ImportArgs) -> Result<ImageEntry> {
    match ctx.store.find(image) {
        Ok(e) => Ok(e),
        Err(lambox_image::Error::ImageNotFound(_)) if image.parse::<Source>().is_ok() => {
            let source: Source = image.parse()?;
            let outcome = run_import(ctx, &source, None, args)?;
            Ok(ctx.store.find(&outcome.image.digest.to_string())?)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn lint(ctx: &Ctx, args: LintArgs) -> Result<ExitCode> {
    use lambox_image::lint::{self, Finding, Level, LintInput, LintReport, Overrides};
    // A stored image, or else a source: import it first. Import refusals that are lint
    // verdicts (several platforms, not linux, too large) become error findings.
    let entry = match find_or_import(ctx, &args.image, &args.import) {
        Ok(e) => e,
        Err(e) => {
            let code = match e.downcast_ref::<lambox_image::Error>() {
                Some(lambox_image::Error::Platform(_)) => "unsupported-platform",
                Some(lambox_image::Error::TooLarge { .. }) => "image-too-large",
                _ => return Err(e),
            };
            let report = LintReport {
                findings: vec![Finding {
                    level: Level::Error,
                    code,
                    message: e.to_string(),
                }],
            };
            return print_lint(&args.image, &report, args.json);
        }
    };
    let config_bytes = ctx.store.read_blob(&entry.image.config_digest)?;
    let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("parse config {}", entry.image.config_digest))?;
    let view = lambox_image::layered::LayeredView::new(
        entry
            .image
            .layers
            .iter()
            .map(|l| ctx.store.layer_path(&l.diff_id))
            .collect(),
    );
    let overrides = Overrides {
        entrypoint: args.overrides.entrypoint,
        cmd: args.overrides.cmd,
        workdir: args.overrides.workdir,
    };
    let report = lint::lint(&LintInput {
        view: &view,
        config: &config,
        uncompressed_size: entry.image.uncompressed_size(),
        max_size: ctx.max_image_size,
        overrides: &overrides,
    });
    let name = entry
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| entry.image.digest.to_string());
    print_lint(&name, &report, args.json)
}

fn print_lint(
    image: &str,
    report: &lambox_image::lint::LintReport,
    json: bool,
) -> Result<ExitCode> {
    if json {
        let mut v = serde_json::to_value(report)?;
        v["Image"] = serde_json::Value::String(image.to_string());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for f in &report.findings {
            let level = serde_json::to_value(f.level)?;
            println!(
                "{}: {}: {}",
                level.as_str().unwrap_or("?"),
                f.code,
                f.message
            );
        }
        if report.deployable() {
            println!("{image}: deployable");
        } else {
            println!("{image}: not deployable");
        }
    }
    Ok(if report.deployable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
