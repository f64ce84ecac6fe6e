//! The `Launcher` of `lambox run` and `lambox serve`: lambox-sandbox behind lambox-runtime's
//! seam, plus what both commands set up around it (the host network and the pre-spawned
//! helpers).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lambox_runtime::launch::{EnvControl, LaunchError, LaunchSpec, Launched, Launcher};
use lambox_sandbox::{Helpers, HostNetwork, Sandbox, SandboxConfig, SandboxError, Spec, Subnet};

/// The Runtime API port inside every environment, as in Lambda.
pub const RUNTIME_API_PORT: u16 = 9001;

/// The network options shared by `lambox run` and `lambox serve`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Environments' network: `nat` (outbound IPv4 through a veth pair and NAT; turns on the
    /// host's IPv4 forwarding while running) or `none` (only lo, for the Runtime API)
    #[arg(long, value_enum, default_value_t = NetworkMode::Nat)]
    network: NetworkMode,
    /// With --network nat: the private subnet environments' addresses come from (a /30 each)
    #[arg(long, default_value = lambox_sandbox::DEFAULT_SUBNET, value_parser = parse_subnet)]
    network_subnet: Subnet,
    /// With --network nat: a nameserver for the environments' /etc/resolv.conf (repeatable;
    /// default: the host's, unless loopback)
    #[arg(long, value_name = "IPV4")]
    dns: Vec<std::net::Ipv4Addr>,
}

impl Default for NetworkArgs {
    /// What the flags default to: NAT in the default subnet, the host's resolvers.
    fn default() -> Self {
        Self {
            network: NetworkMode::Nat,
            network_subnet: lambox_sandbox::DEFAULT_SUBNET
                .parse()
                .unwrap_or_else(|e| unreachable!("DEFAULT_SUBNET parses: {e}")),
            dns: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetworkMode {
    Nat,
    None,
}

fn parse_subnet(s: &str) -> Result<Subnet, String> {
    s.parse()
        .map_err(|e: lambox_sandbox::NetworkError| e.to_string())
}

/// The sandbox side of a running `lambox run`/`lambox serve`: the host network (if NAT) and
/// the pre-spawned helpers. [`SandboxHost::shutdown`] undoes both.
pub struct SandboxHost {
    pub helpers: Arc<Helpers<tokio::process::Child>>,
    /// Held until the end: tearing it down removes lambox's nftables table (if no other
    /// lambox process uses it) and restores forwarding.
    host_network: Option<HostNetwork>,
}

impl SandboxHost {
    /// Sets up the network of `args`, starts the pool of network namespaces and `helpers`
    /// pre-spawned helpers (children spawned on `runtime`), and waits (≤ 0.5 s) for the first
    /// helper, so that the first invoke's cold start does not wait for it.
    pub fn start(
        state_dir: PathBuf,
        args: &NetworkArgs,
        helpers: usize,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self> {
        let mut config = SandboxConfig::new(state_dir);
        let host_network = match args.network {
            NetworkMode::None => None,
            NetworkMode::Nat => {
                std::fs::create_dir_all(&config.state_dir)
                    .with_context(|| format!("create {}", config.state_dir.display()))?;
                let dns = (!args.dns.is_empty()).then_some(args.dns.as_slice());
                let host = HostNetwork::setup(&config.state_dir, args.network_subnet, dns)
                    .context("set up --network nat")?;
                if host.nameservers().is_empty() {
                    eprintln!(
                        "lambox: warning: the host has no DNS resolver environments can reach (only loopback ones); functions get no DNS unless --dns is given"
                    );
                }
                config.network = host.network();
                Some(host)
            }
        };
        // The first cold start finds its network namespace (and veth pair) made already.
        lambox_sandbox::prewarm_network(&config, RUNTIME_API_PORT);
        let helpers = Arc::new(Helpers::new(config, helpers.max(1), move |cmd| {
            let _guard = runtime.enter();
            tokio::process::Command::from(cmd)
                // Its own process group: a terminal's Ctrl-C (SIGINT to the foreground group)
                // reaches lambox, which shuts down gracefully, not the functions.
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        }));
        // Its cgroup join can wait ~15 ms for the kernel; bounded, in case it cannot be made.
        helpers.wait_ready(1, Duration::from_millis(500));
        Ok(Self {
            helpers,
            host_network,
        })
    }

    /// A launcher for an image whose stored layers are `layers` (lowest first).
    pub fn launcher(&self, layers: Vec<PathBuf>) -> SandboxLauncher {
        SandboxLauncher {
            helpers: self.helpers.clone(),
            layers,
        }
    }

    /// Ends the waiting helpers, removes lambox's empty cgroups and undoes the host network.
    /// Call after every environment has been torn down.
    pub fn shutdown(self) {
        self.helpers.shutdown();
        lambox_sandbox::remove_empty_cgroups();
        if let Some(host) = self.host_network {
            host.teardown();
        }
    }
}

/// Starts environments in the sandbox: the image's stored layers as a read-only root.
#[derive(Debug)]
pub struct SandboxLauncher {
    /// Pre-spawned helpers, already in fresh cgroups (see lambox_sandbox::Helpers).
    helpers: Arc<Helpers<tokio::process::Child>>,
    layers: Vec<PathBuf>,
}

#[derive(Debug)]
struct SandboxControl(Sandbox);

impl EnvControl for SandboxControl {
    fn freeze(&self) -> std::io::Result<()> {
        self.0.freeze()
    }
    fn freeze_nowait(&self) -> std::io::Result<()> {
        self.0.freeze_nowait()
    }
    fn thaw(&self) -> std::io::Result<()> {
        self.0.thaw()
    }
    fn kill(&self) {
        self.0.kill()
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        self.0.max_memory_bytes()
    }
    fn oom_killed(&self) -> bool {
        self.0.oom_killed()
    }
    fn cleanup(&self) {
        self.0.cleanup()
    }
}

impl Launcher for SandboxLauncher {
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        let sandbox_spec = Spec {
            layers: self.layers.clone(),
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            memory_mb: spec.memory_mb,
            ephemeral_storage_mb: spec.ephemeral_storage_mb,
            hostname: "localhost".to_string(),
            runtime_api_port: RUNTIME_API_PORT,
        };
        let (sandbox, child, listener) =
            self.helpers.spawn(&sandbox_spec).map_err(|e| match e {
                SandboxError::InvalidEntrypoint(m) => LaunchError::InvalidEntrypoint(m),
                SandboxError::InvalidWorkingDir(m) => LaunchError::InvalidWorkingDir(m),
                SandboxError::Setup(m) => LaunchError::Other(m),
            })?;
        Ok(Launched {
            child,
            listener,
            control: Box::new(SandboxControl(sandbox)),
        })
    }
}
