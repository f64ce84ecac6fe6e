//! The `Launcher` of `lambox run` and `lambox serve`: lambox-sandbox behind lambox-runtime's
//! seam.

use std::path::PathBuf;
use std::process::Stdio;

use lambox_runtime::launch::{EnvControl, LaunchError, LaunchSpec, Launched, Launcher};
use lambox_sandbox::{Sandbox, SandboxConfig, SandboxError, Spec};

/// The Runtime API port inside every environment, as in Lambda.
const RUNTIME_API_PORT: u16 = 9001;

/// Starts environments in the sandbox: the image's stored layers as a read-only root.
#[derive(Debug)]
pub struct SandboxLauncher {
    pub config: SandboxConfig,
    pub layers: Vec<PathBuf>,
}

#[derive(Debug)]
struct SandboxControl(Sandbox);

impl EnvControl for SandboxControl {
    fn freeze(&self) -> std::io::Result<()> {
        self.0.freeze()
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
        let (sandbox, child, listener) = Sandbox::spawn_with(&self.config, &sandbox_spec, |cmd| {
            tokio::process::Command::from(cmd)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        })
        .map_err(|e| match e {
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
