//! `passgate serve`: start-up in a fixed order (config → logging → store →
//! TLS → listeners → admin socket), background housekeeping, signals
//! (SIGHUP reloads the certificate; SIGTERM/SIGINT drain and exit 0).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{load, ConfigArg, Failure};
use crate::gateway::Gateway;
use crate::store::Store;
use crate::tls::Tls;
use crate::{admin, server, telemetry};

pub fn run(arg: &ConfigArg) -> Result<(), Failure> {
    let config = load(arg)?;
    telemetry::init(config.server.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start runtime: {e}")))?;
    runtime.block_on(async move {
        let store = Store::open(&config.store.path)
            .map_err(|e| Failure::Runtime(store_message(&config.store.path, &e)))?;
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(
                Tls::load(files).map_err(|e| Failure::Runtime(e.to_string()))?,
            )),
            None => None,
        };
        let mut listeners = Vec::new();
        for addr in &config.server.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::Runtime(format!("cannot listen on {addr}: {e}")))?;
            listeners.push(l);
        }
        let admin_path = config.admin_socket.clone();
        let admin_listener = admin::bind(&admin_path)
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        let gw = Arc::new(
            Gateway::new(config, Arc::new(store)).map_err(|e| Failure::Runtime(e.to_string()))?,
        );
        // Install the handlers before announcing the listeners: until then a
        // SIGTERM or SIGHUP takes its default action and kills the process.
        let shutdown = shutdown_signal(
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let hup = signal(SignalKind::hangup());
        let scheme = if tls.is_some() { "https" } else { "http" };
        for l in &listeners {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "passgate listening on {scheme}://{addr}");
            }
        }
        tracing::info!(socket = %admin_path.display(), "admin socket ready");
        let admin_task = tokio::spawn(admin::serve(gw.clone(), admin_listener, admin_path.clone()));
        let housekeeping = tokio::spawn(housekeeping(gw.clone()));
        let reloader = tls.clone().map(|t| tokio::spawn(reload_on_hup(t, hup)));
        server::run(gw.clone(), listeners, tls, shutdown).await;
        admin_task.abort();
        housekeeping.abort();
        if let Some(r) = reloader {
            r.abort();
        }
        let flush = gw.clone();
        let _ = tokio::task::spawn_blocking(move || flush.auth.flush_usage()).await;
        let _ = std::fs::remove_file(&admin_path);
        tracing::info!("passgate stopped");
        Ok(())
    })
}

fn store_message(path: &std::path::Path, e: &crate::store::StoreError) -> String {
    match e {
        crate::store::StoreError::UnknownSchema { .. } => format!("{}: {e}", path.display()),
        _ => e.to_string(),
    }
}

/// Resolves on SIGTERM or SIGINT (handlers already installed by the caller).
async fn shutdown_signal(term: std::io::Result<Signal>, int: std::io::Result<Signal>) {
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

async fn reload_on_hup(tls: Arc<Tls>, hup: std::io::Result<Signal>) {
    let Ok(mut hup) = hup else {
        tracing::error!("cannot install the SIGHUP handler; certificate reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the current certificate")
            }
        }
    }
}

/// Flushes "last used" facts and prunes caches on a fixed period.
async fn housekeeping(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(gw.config.auth.usage_flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let g = gw.clone();
        let _ = tokio::task::spawn_blocking(move || {
            g.auth.flush_usage();
            g.auth.prune();
        })
        .await;
    }
}
