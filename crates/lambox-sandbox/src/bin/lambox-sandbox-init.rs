//! Test helper: a stand-in for the lambox binary's re-exec entry point, so that this crate's
//! integration tests can point `SandboxConfig::init_exe` at it. The lambox binary itself calls
//! `lambox_sandbox::run_init_if_requested()` first thing in `main` instead.

fn main() {
    lambox_sandbox::run_init_if_requested();
    eprintln!(
        "lambox-sandbox-init: run by lambox-sandbox only (argv[1] must be {})",
        lambox_sandbox::INIT_ARG
    );
    std::process::exit(2);
}
