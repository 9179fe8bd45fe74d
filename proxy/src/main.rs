//! `cz-proxy`: parses flags, binds, runs until SIGTERM or Ctrl-C, drains and exits 0.

use anyhow::Context;
use clap::Parser;
use cz_proxy::{run, Config, Listeners};
use cz_shared::tls::Identity;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let identity = Identity::from_dir(&config.tls_dir).with_context(|| {
        format!(
            "could not read the session certificates from {} (ca.crt, tls.crt, tls.key): czctl mounts them from the session's Secret",
            config.tls_dir.display()
        )
    })?;
    // The first HTTP worker, the tunnel, the admin port and pass-through ports run here; `run`
    // starts the other workers, each on a thread and event loop of its own.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?
        .block_on(async {
            let listeners = Listeners::bind(&config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone()));
            run(config, identity, listeners, shutdown).await?;
            Ok(())
        })
}

/// Cancels `shutdown` on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn signal_shutdown(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
