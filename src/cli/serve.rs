//! `passgate serve`: start-up in a fixed order (config → logging → store →
//! TLS → listeners → admin socket), background housekeeping, signals
//! (SIGHUP reloads the whole config, as `passgate reload` does; SIGTERM/SIGINT
//! drain and exit 0, or 1 when `shutdown_grace` ran out with connections open).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::{load, load_tls, open_store, store_message, upstream_failure, ConfigArg, Failure};
use crate::audit::Via;
use crate::gateway::{CacheEvictions, Gateway, GatewayError, Live};
use crate::server::Drain;
use crate::store::StatusCounts;
use crate::{admin, audit, metrics, reload, server, telemetry};

/// File descriptors beyond two per connection (its own and its upstream's):
/// listeners, the store, the admin socket, logs, argon2 and store threads.
const SPARE_FDS: u64 = 128;

/// Raises the soft open-files limit towards what `max_connections` needs
/// (systemd's default soft limit is 1024), up to the hard limit; warns when
/// even that is short, since accept would then fail for everyone.
fn ensure_fd_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let want = (max_connections as u64).saturating_mul(2) + SPARE_FDS;
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= want {
        return;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    limit.current = Some(want.min(hard));
    let raised = setrlimit(Resource::Nofile, limit).is_ok();
    let now = if raised { want.min(hard) } else { soft };
    if now < want {
        tracing::warn!(
            open_files = now,
            needed = want,
            "server.max_connections needs about 2 file descriptors per connection; raise the open-files limit (LimitNOFILE=, ulimit -n) or lower max_connections"
        );
    }
}

pub fn run(arg: &ConfigArg) -> Result<(), Failure> {
    pin_malloc_mmap_threshold();
    let config = load(arg)?;
    let _log_guard = telemetry::init(config.server.log_format);
    let warnings = config.warnings();
    for line in warnings.shadowed.iter().chain(&warnings.slash) {
        tracing::warn!("{line}");
    }
    ensure_fd_limit(config.server.max_connections);
    // The control runtime: admin socket, housekeeping, signals. Requests are
    // served by the worker threads of `server::spawn_workers`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start runtime: {e}")))?;
    runtime.block_on(async move {
        // First, so that `/readyz` answers 503 while the store opens.
        let metrics_task = match &config.metrics {
            Some(m) => {
                let l = metrics::listener::bind(m.listen).await.map_err(|e| {
                    Failure::Runtime(format!(
                        "cannot listen on {} (metrics.listen): {e}",
                        m.listen
                    ))
                })?;
                metrics::enable();
                if let Ok(addr) = l.local_addr() {
                    tracing::info!(%addr, "metrics on http://{addr}/metrics");
                }
                Some(tokio::spawn(metrics::listener::serve(l)))
            }
            None => None,
        };
        // Blocking (file lock, or connecting and migrating): off the runtime.
        let opened = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                open_store(&config).map_err(|e| store_message(&config, &e))
            })
            .await
            .map_err(|e| Failure::Runtime(format!("cannot open the store: {e}")))?
        };
        let store = opened.map_err(Failure::Runtime)?;
        // A certificate or key the config names that cannot be used is a
        // bad config (exit 2), as a reload refuses it.
        let tls = load_tls(&config)?.map(Arc::new);
        let mut listeners = Vec::new();
        for addr in &config.server.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::Runtime(format!("cannot listen on {addr}: {e}")))?;
            listeners.push(
                l.into_std()
                    .map_err(|e| Failure::Runtime(format!("cannot listen on {addr}: {e}")))?,
            );
        }
        let admin_path = config.admin_socket.clone();
        let admin_listener = admin::bind(&admin_path)
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        let file = config.file.clone();
        let gw = Gateway::new(config, Arc::new(store)).map_err(|e| match e {
            // An upstream's ca_file that cannot be used is a bad config.
            GatewayError::Upstream(u) => upstream_failure(&file, &u),
            GatewayError::Hash(_) => Failure::Runtime(e.to_string()),
        })?;
        let workers_wanted = gw.config.server.workers;
        let store = gw.store.clone();
        let live = Arc::new(Live::new(gw, tls.clone()));
        store.watch(Arc::new(CacheEvictions(Arc::downgrade(&live))));
        metrics::set_source(Box::new(Gauges {
            live: Arc::downgrade(&live),
            counted: std::sync::Mutex::default(),
        }));
        // Signal handlers exist before anyone learns the gateway is up.
        let hup = signal(SignalKind::hangup())
            .map_err(|e| Failure::Runtime(format!("cannot install SIGHUP handler: {e}")))?;
        let stop = shutdown_signal()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        for l in &listeners {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "passgate listening on {scheme}://{addr}");
            }
        }
        tracing::info!(socket = %admin_path.display(), "admin socket ready");
        let admin_task = tokio::spawn(admin::serve(
            live.clone(),
            admin_listener,
            admin_path.clone(),
        ));
        let housekeeping = tokio::spawn(housekeeping(live.clone()));
        let audit_summaries = tokio::spawn(audit_summaries());
        let reloader = tokio::spawn(reload_on_hup(hup, live.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let workers = server::spawn_workers(&live, &listeners, &tls, workers_wanted, &stop_rx)
            .map_err(|e| Failure::Runtime(format!("cannot start worker threads: {e}")))?;
        drop(listeners);
        metrics::set_ready(true);
        stop.await;
        metrics::set_ready(false);
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        // Every worker is joined (collected first), whatever the others' drains.
        let cut = tokio::task::spawn_blocking(move || {
            let drains: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            drains.iter().any(|d| matches!(d, Ok(Drain::Cut)))
        })
        .await
        .unwrap_or(false);
        admin_task.abort();
        housekeeping.abort();
        audit_summaries.abort();
        audit::flush();
        reloader.abort();
        if let Some(t) = metrics_task {
            t.abort();
        }
        let flush = live.load();
        let _ = tokio::task::spawn_blocking(move || flush.auth.flush_usage()).await;
        let _ = std::fs::remove_file(&admin_path);
        tracing::info!("passgate stopped");
        if cut {
            // Not a success: clients lost requests (docs/operations.md, exit codes).
            let grace = live.load().config.server.shutdown_grace;
            return Err(Failure::Runtime(format!(
                "shutdown_grace ({}) ran out: connections still open were closed",
                humantime::format_duration(grace)
            )));
        }
        Ok(())
    })
}

/// What a scrape reads from the running gateway (`metrics::Source`).
struct Gauges {
    /// Weak: the metrics listener must not keep the gateway (and its store) alive.
    live: std::sync::Weak<Live>,
    /// The last count of app passwords by status and when it was taken:
    /// scrapes share one store read per [`COUNT_MAX_AGE`], however many
    /// arrive (the listener has no authentication). The lock is held while
    /// counting, so concurrent scrapes wait for that one read.
    counted: std::sync::Mutex<Option<(std::time::Instant, StatusCounts)>>,
}

/// The longest a count of app passwords is reused by later scrapes.
const COUNT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

impl Gauges {
    /// App passwords by status label, empty when the store cannot be read.
    fn app_passwords(&self, store: &crate::store::Store) -> Vec<(&'static str, u64)> {
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = counted
            .filter(|(at, _)| at.elapsed() < COUNT_MAX_AGE)
            .map(|(_, counts)| counts);
        let counts = match fresh {
            Some(counts) => counts,
            None => match store.count_by_status(crate::clock::unix_now()) {
                Ok(counts) => {
                    *counted = Some((std::time::Instant::now(), counts));
                    counts
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot count app passwords");
                    return Vec::new();
                }
            },
        };
        counts
            .by_status()
            .map(|(status, n)| (status.as_str(), n))
            .to_vec()
    }
}

impl metrics::Source for Gauges {
    fn sample(&self) -> metrics::Sample {
        let Some(live) = self.live.upgrade() else {
            return metrics::Sample::default();
        };
        let gw = live.load();
        let (running, waiting, capacity) = gw.auth.verify_load();
        let app_passwords = self.app_passwords(&gw.store);
        metrics::Sample {
            open_connections: gw.conn_limits.open_now() as u64,
            verify_running: running as u64,
            verify_waiting: waiting as u64,
            verify_capacity: capacity as u64,
            app_passwords,
            cert_not_after: live.tls.as_ref().and_then(|t| t.not_after()),
        }
    }

    fn store_ready(&self) -> bool {
        self.live
            .upgrade()
            .is_some_and(|live| live.load().store.ready())
    }
}

/// glibc raises its mmap threshold each time a large mmapped block is freed,
/// so after the first argon2id verification (19 MiB) that memory stays in the
/// heap for good, more than doubling idle RSS after one login. A fixed
/// threshold can only be set before malloc starts, through the environment,
/// so `serve` re-executes itself once with it set (same pid; an explicit
/// setting by the operator is respected). Nothing changes if exec fails.
///
/// The value sits above hyper's largest HTTP/1 read buffer and far below
/// argon2id's block. At glibc's initial 128 KiB, every read buffer of a
/// streamed upstream response (hyper allocates a new one per read while the
/// previous chunk is still being written to the client) was a fresh mmap,
/// zeroed by the kernel page by page and unmapped again: see
/// docs/performance.md, "Large responses".
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_malloc_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
    /// 1 MiB: hyper's HTTP/1 read buffer grows to 8 KiB + 400 KiB at most.
    const MMAP_THRESHOLD: &str = "1048576";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, MMAP_THRESHOLD)
        .exec();
    eprintln!(
        "passgate: note: could not re-exec with a fixed malloc mmap threshold ({err}); continuing"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_malloc_mmap_threshold() {}

/// A future resolving on SIGTERM or SIGINT (handlers installed now).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    let err = |e: std::io::Error| Failure::Runtime(format!("cannot install signal handlers: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// SIGHUP reloads the whole config, certificate included (`reload.rs`); a
/// refused reload is logged and audited there and changes nothing.
async fn reload_on_hup(mut hup: tokio::signal::unix::Signal, live: Arc<Live>) {
    while hup.recv().await.is_some() {
        let live = live.clone();
        let _ = tokio::task::spawn_blocking(move || reload::reload(&live, Via::Signal)).await;
    }
}

/// Flushes "last used" facts and prunes caches every `[auth] usage_flush`
/// (as the config in force says at each turn).
async fn housekeeping(live: Arc<Live>) {
    loop {
        // A `let`, not a temporary inside the `sleep(…).await` statement,
        // which would keep this gateway alive across the sleep (and, after
        // a reload, the old config with it).
        let every = live.load().config.auth.usage_flush;
        tokio::time::sleep(every).await;
        let g = live.load();
        let _ = tokio::task::spawn_blocking(move || {
            g.auth.flush_usage();
            g.auth.prune();
        })
        .await;
    }
}

/// Writes the count of audit lines held back by [`audit::admit`], once a second.
async fn audit_summaries() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        audit::flush();
    }
}
