//! Serve the registry alone, until killed: `serve ADDR DATA_DIR` (e.g. `127.0.0.1:5000
//! /var/tmp/lambox-data`). For benchmarks and manual tests until `lambox serve` mounts it.

use std::sync::Arc;

use lambox_image::store::Store;
use lambox_registry::{Registry, RegistryConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(dir)) = (args.next(), args.next()) else {
        return Err("usage: serve ADDR DATA_DIR".into());
    };
    let store = Arc::new(Store::open(std::path::Path::new(&dir))?);
    let registry = Registry::new(store, RegistryConfig::default());
    let _reaper = registry.spawn_upload_reaper();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("registry listening on {}", listener.local_addr()?);
    axum::serve(listener, registry.router()).await?;
    Ok(())
}
