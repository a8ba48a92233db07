//! A config reload (SIGHUP, `passgate reload`): the whole `proxy.toml` read
//! and validated as `check-config` does, then put in force at once.
//!
//! All or nothing: the file, the upstreams' CA files and the certificate are
//! all read before anything changes; any error refuses the reload, the running
//! config stays in force, and the error (`file:line: key: message`) is logged,
//! audited and answered. Then one atomic swap ([`Live::swap`]): requests that
//! started before it finish under the old config, new ones get the new one.
//!
//! Some keys size what was built once at start-up: sockets, the store, threads,
//! the log writer, shared caches. A changed one is reported as needing a
//! restart and keeps its running value; the rest of the file still applies
//! ([`RESTART_ONLY`]).

use crate::audit::{self, AuditEvent, Via};
use crate::config::{Config, ConfigError, StoreConfig};
use crate::gateway::{GatewayError, Live};
use crate::metrics::{self, ReloadOutcome};
use crate::tls::{Loaded, TlsError};

/// The keys a reload does not change (they need a restart), as reported.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.tls",
    "server.workers",
    "server.log_format",
    "store",
    "admin.socket",
    "auth.verify_threads",
    "auth.cache_ttl",
    "auth.cache_capacity",
    "metrics.listen",
];

/// A reload put in force.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// One line per changed key that needs a restart (see [`RESTART_ONLY`]).
    pub restart: Vec<String>,
    /// What `check-config` warns about in the new file.
    pub warnings: Vec<String>,
}

/// Why a reload was refused; the running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: {source}")]
    Gateway {
        file: String,
        #[source]
        source: GatewayError,
    },
    #[error("{file}: server.tls: TLS reload failed: {source}")]
    Tls {
        file: String,
        #[source]
        source: Box<TlsError>,
    },
}

/// Re-reads the running config's file and puts it in force, or refuses.
/// Blocking (reads files): call from a blocking task.
pub fn reload(live: &Live, via: Via) -> Result<Applied, ReloadError> {
    let _one_at_a_time = live.reload_lock();
    let old = live.load();
    let file = old.config.file.display().to_string();
    let outcome = prepare_and_swap(live, &old.config);
    match &outcome {
        Ok(applied) => {
            metrics::record_reload(ReloadOutcome::Applied);
            for w in &applied.warnings {
                tracing::warn!("{w}");
            }
            for r in &applied.restart {
                tracing::warn!("reload: {r}");
            }
            audit::emit(AuditEvent::Reloaded {
                via,
                file: &file,
                restart: &applied
                    .restart
                    .iter()
                    .filter_map(|r| r.split(':').next())
                    .collect::<Vec<_>>()
                    .join(" "),
            });
            tracing::info!(file = %file, "config reloaded");
        }
        Err(e) => {
            metrics::record_reload(ReloadOutcome::Rejected);
            audit::emit(AuditEvent::ReloadRefused {
                via,
                file: &file,
                error: &e.to_string(),
            });
        }
    }
    outcome
}

fn prepare_and_swap(live: &Live, running: &Config) -> Result<Applied, ReloadError> {
    let file = running.file.display().to_string();
    let mut config = Config::load(&running.file)?;
    let restart = keep_running(&mut config, running);
    let warnings = config.warnings();
    let tls = match (&live.tls, &config.server.tls) {
        (Some(_), Some(files)) => Some(Loaded::read(files).map_err(|source| ReloadError::Tls {
            file: file.clone(),
            source: Box::new(source),
        })?),
        _ => None,
    };
    let old = live.load();
    let fresh = old
        .reloaded(config)
        .map_err(|source| ReloadError::Gateway { file, source })?;
    let old = live.swap(fresh);
    if let (Some(t), Some(loaded)) = (&live.tls, tls) {
        t.install(loaded);
        tracing::info!("TLS certificate reloaded");
    }
    old.auth.retire(&live.load().auth);
    Ok(Applied {
        restart,
        warnings: warnings
            .shadowed
            .into_iter()
            .chain(warnings.slash)
            .collect(),
    })
}

/// Gives every restart-only key of `new` its running value; returns one
/// line per key that differed.
fn keep_running(new: &mut Config, running: &Config) -> Vec<String> {
    let mut restart = Vec::new();
    let mut note = |key: &str, keeps: String| {
        debug_assert!(RESTART_ONLY.contains(&key));
        restart.push(format!(
            "{key}: changed in the file; needs a restart, keeps {keeps} until then"
        ));
    };
    let (n, r) = (&mut new.server, &running.server);
    if n.listen != r.listen {
        let addrs: Vec<String> = r.listen.iter().map(ToString::to_string).collect();
        note("server.listen", addrs.join(", "));
        n.listen = r.listen.clone();
    }
    if n.tls.is_some() != r.tls.is_some() {
        note(
            "server.tls",
            if r.tls.is_some() {
                "TLS on"
            } else {
                "plain HTTP"
            }
            .to_owned(),
        );
        n.tls = r.tls.clone();
    }
    if n.workers != r.workers {
        note("server.workers", r.workers.to_string());
        n.workers = r.workers;
    }
    if n.log_format != r.log_format {
        note(
            "server.log_format",
            format!("{:?}", r.log_format).to_lowercase(),
        );
        n.log_format = r.log_format;
    }
    if !same_store(&new.store, &running.store) {
        note("store", store_name(&running.store));
        new.store = running.store.clone();
    }
    if new.admin_socket != running.admin_socket {
        note("admin.socket", running.admin_socket.display().to_string());
        new.admin_socket = running.admin_socket.clone();
    }
    let (n, r) = (&mut new.auth, &running.auth);
    if n.verify_threads != r.verify_threads {
        note("auth.verify_threads", r.verify_threads.to_string());
        n.verify_threads = r.verify_threads;
    }
    if n.cache_ttl != r.cache_ttl {
        note(
            "auth.cache_ttl",
            crate::config::format_duration(r.cache_ttl),
        );
        n.cache_ttl = r.cache_ttl;
    }
    if n.cache_capacity != r.cache_capacity {
        note("auth.cache_capacity", r.cache_capacity.to_string());
        n.cache_capacity = r.cache_capacity;
    }
    let listen = |m: &Option<crate::config::Metrics>| m.as_ref().map(|m| m.listen);
    if listen(&new.metrics) != listen(&running.metrics) {
        let keeps = listen(&running.metrics).map_or("none".to_owned(), |a| a.to_string());
        note("metrics.listen", keeps);
        new.metrics = running.metrics.clone();
    }
    restart
}

fn same_store(a: &StoreConfig, b: &StoreConfig) -> bool {
    match (a, b) {
        (StoreConfig::Redb { path: x }, StoreConfig::Redb { path: y }) => x == y,
        (StoreConfig::Postgres { url: x }, StoreConfig::Postgres { url: y }) => {
            x.shown() == y.shown()
        }
        _ => false,
    }
}

fn store_name(s: &StoreConfig) -> String {
    match s {
        StoreConfig::Redb { path } => path.display().to_string(),
        StoreConfig::Postgres { url } => url.shown().to_owned(),
    }
}
