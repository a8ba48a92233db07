//! The access log: one line per request, formatted off the request path.
//!
//! A worker hands an [`AccessLine`] (owned fields, no formatting) to a
//! bounded channel; the `passgate-access` thread formats lines in batches,
//! scrubs them like every other log line and passes each batch to the log
//! writer in one piece. Formatting through `tracing` on the worker cost CPU
//! on the request path plus a futex wake-up of the writer per line (figures
//! in docs/performance.md). The thread sleeps a few milliseconds between batches while busy, so senders
//! find it awake rarely and wake it only when traffic is light.
//!
//! The lines are the ones `tracing-subscriber` writes for the event
//! `info!(target: "passgate::access", …)`, human or JSON, and `RUST_LOG`
//! decides as for any other target. Without a running thread (tests, or
//! after shutdown) the event goes through `tracing` as before.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::Method;
use tracing_appender::non_blocking::NonBlocking;

use crate::config::LogFormat;
use crate::path::NormalPath;

/// Lines queued before a sender waits (back-pressure, never loss).
const QUEUE: usize = 4096;
/// Pause between batches while lines keep coming.
const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// One request's access-log fields.
#[derive(Debug)]
pub struct AccessLine {
    pub at: SystemTime,
    pub peer: SocketAddr,
    pub method: Method,
    pub path: Option<NormalPath>,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    pub status: u16,
    pub reject: Option<&'static str>,
    pub bytes: u64,
    pub complete: bool,
    pub duration: Duration,
}

#[expect(
    clippy::large_enum_variant,
    reason = "boxing would cost an allocation per request; Stop is sent once"
)]
enum Msg {
    Line(AccessLine),
    Stop,
}

struct Sink {
    tx: SyncSender<Msg>,
    running: AtomicBool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Whether `RUST_LOG` enables access lines: ask before building one.
pub fn enabled() -> bool {
    tracing::enabled!(target: "passgate::access", tracing::Level::INFO)
}

/// Logs one access line (the caller has checked [`enabled`]).
pub fn write(line: AccessLine) {
    match SINK.get() {
        Some(sink) if sink.running.load(Ordering::Acquire) => {
            if let Err(std::sync::mpsc::SendError(Msg::Line(line))) = sink.tx.send(Msg::Line(line))
            {
                through_tracing(&line);
            }
        }
        _ => through_tracing(&line),
    }
}

/// The same event, formatted by `tracing` on the calling thread.
fn through_tracing(l: &AccessLine) {
    tracing::info!(
        target: "passgate::access",
        peer = %l.peer,
        method = %l.method,
        path = l.path.as_ref().map_or("-", NormalPath::as_str),
        route = l.route.as_deref().unwrap_or("-"),
        upstream = l.upstream.as_deref().unwrap_or("-"),
        user = l.user.as_deref().unwrap_or("-"),
        status = l.status,
        reject = l.reject.unwrap_or("-"),
        bytes = l.bytes,
        complete = l.complete,
        duration_ms = millis(l.duration),
    );
}

/// The formatting thread; dropping this drains the queue and stops it (do
/// that before the log writer's own guard goes).
#[derive(Debug)]
pub struct AccessThread {
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Starts the thread that formats access lines into `out`. Only the first
/// call in a process starts one; later calls return `None`.
pub fn start(format: LogFormat, out: NonBlocking) -> Option<AccessThread> {
    let (tx, rx) = sync_channel(QUEUE);
    let sink = Sink {
        tx,
        running: AtomicBool::new(false),
    };
    SINK.set(sink).ok()?;
    let handle = std::thread::Builder::new()
        .name("passgate-access".into())
        .spawn(move || run(&rx, format, out))
        .ok()?;
    SINK.get()?.running.store(true, Ordering::Release);
    Some(AccessThread {
        handle: Some(handle),
    })
}

impl Drop for AccessThread {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get() {
            sink.running.store(false, Ordering::Release);
            let _ = sink.tx.send(Msg::Stop);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(rx: &Receiver<Msg>, format: LogFormat, mut out: NonBlocking) {
    let mut batch = String::with_capacity(64 * 1024);
    let mut line = String::with_capacity(512);
    loop {
        // Block only when idle: a sender then wakes us for its one line.
        let Ok(first) = rx.recv() else {
            return;
        };
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Msg::Line(l)) => {
                    line.clear();
                    render(&mut line, &l, format);
                    super::push_scrubbed(&mut batch, &line);
                }
                Some(Msg::Stop) => {
                    let _ = out.write_all(batch.as_bytes());
                    return;
                }
                None => {}
            }
            match rx.try_recv() {
                Ok(m) => next = Some(m),
                Err(TryRecvError::Empty) => {
                    if !batch.is_empty() {
                        let _ = out.write_all(batch.as_bytes());
                        batch.clear();
                        // Busy: let lines gather instead of being woken per line.
                        pause();
                        continue;
                    }
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    let _ = out.write_all(batch.as_bytes());
                    return;
                }
            }
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "this is the access-log thread's own OS thread, not a reactor"
)]
fn pause() {
    std::thread::sleep(BATCH_PAUSE);
}

/// Formats `l` as `tracing-subscriber` formats the equivalent event.
pub fn render(out: &mut String, l: &AccessLine, format: LogFormat) {
    let at = humantime::format_rfc3339_micros(l.at);
    let ms = millis(l.duration);
    let (path, route, upstream, user, reject) = (
        l.path.as_ref().map_or("-", NormalPath::as_str),
        l.route.as_deref().unwrap_or("-"),
        l.upstream.as_deref().unwrap_or("-"),
        l.user.as_deref().unwrap_or("-"),
        l.reject.unwrap_or("-"),
    );
    let _ = match format {
        LogFormat::Human => writeln!(
            out,
            "{at}  INFO passgate::access: peer={} method={} path={path:?} route={route:?} \
             upstream={upstream:?} user={user:?} status={} reject={reject:?} bytes={} \
             complete={} duration_ms={ms:?}",
            l.peer, l.method, l.status, l.bytes, l.complete,
        ),
        LogFormat::Json => writeln!(
            out,
            "{{\"timestamp\":\"{at}\",\"level\":\"INFO\",\"peer\":\"{}\",\"method\":{},\
             \"path\":{},\"route\":{},\"upstream\":{},\"user\":{},\"status\":{},\"reject\":{},\
             \"bytes\":{},\"complete\":{},\"duration_ms\":{},\"target\":\"passgate::access\"}}",
            l.peer,
            json(l.method.as_str()),
            json(path),
            json(route),
            json(upstream),
            json(user),
            l.status,
            json(reject),
            l.bytes,
            l.complete,
            number(ms),
        ),
    };
}

/// A duration in milliseconds, to the microsecond: a JSON number (#20).
fn millis(d: Duration) -> f64 {
    // Microseconds fit a double's 53 bits exactly for 285 years.
    d.as_micros() as f64 / 1000.0
}

/// `ms` as [`super::json`] writes a float field.
fn number(ms: f64) -> String {
    serde_json::Number::from_f64(ms).map_or_else(|| "0".to_owned(), |n| n.to_string())
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"-\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::Captured;

    fn sample() -> AccessLine {
        AccessLine {
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_189_927_205_083),
            peer: "127.0.0.1:4242".parse().unwrap(),
            method: Method::GET,
            path: Some(crate::path::normalise("/a%22b/%C3%BC").unwrap()),
            route: Some("all".into()),
            upstream: None,
            user: Some("alice".into()),
            status: 200,
            reject: None,
            bytes: 100,
            complete: true,
            duration: Duration::from_micros(1308),
        }
    }

    #[test]
    fn human_line_matches_tracing_fmt() {
        let mut s = String::new();
        render(&mut s, &sample(), LogFormat::Human);
        assert_eq!(
            s,
            "2026-12-02T05:38:47.205083Z  INFO passgate::access: peer=127.0.0.1:4242 method=GET \
             path=\"/a%22b/%C3%BC\" route=\"all\" upstream=\"-\" user=\"alice\" status=200 reject=\"-\" \
             bytes=100 complete=true duration_ms=1.308\n"
        );
    }

    #[test]
    fn json_line_is_valid_json_with_every_field() {
        let mut s = String::new();
        render(&mut s, &sample(), LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).unwrap();
        assert_eq!(v["timestamp"], "2026-12-02T05:38:47.205083Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "passgate::access");
        assert_eq!(v["peer"], "127.0.0.1:4242");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a%22b/%C3%BC");
        assert_eq!(v["upstream"], "-");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 100);
        assert_eq!(v["complete"], true);
        assert_eq!(v["duration_ms"], 1.308);
        assert!(s.ends_with("}\n"));
    }

    /// What `tracing-subscriber`, set up as `telemetry::init` sets it up,
    /// writes for the same event (its own timestamp: compared without it).
    fn via_tracing(l: &AccessLine, format: LogFormat) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let make = move || sink.clone();
        let builder = tracing_subscriber::fmt().with_writer(make);
        match format {
            LogFormat::Human => {
                tracing::subscriber::with_default(builder.with_ansi(false).finish(), || {
                    through_tracing(l)
                })
            }
            LogFormat::Json => tracing::subscriber::with_default(
                builder
                    .event_format(crate::telemetry::json::JsonLines)
                    .finish(),
                || through_tracing(l),
            ),
        }
        captured.text()
    }

    #[test]
    fn both_formats_match_what_tracing_writes_for_the_same_event() {
        let mut lines = vec![sample()];
        let mut other = sample();
        other.path = None;
        other.user = Some("bob \\ \"x\"".into());
        other.reject = Some("unauthorized");
        other.status = 401;
        other.complete = false;
        other.peer = "[2001:db8::1]:443".parse().unwrap();
        other.method = Method::from_bytes(b"PROPFIND").unwrap();
        lines.push(other);
        for l in &lines {
            for format in [LogFormat::Human, LogFormat::Json] {
                let mut ours = String::new();
                render(&mut ours, l, format);
                let theirs = via_tracing(l, format);
                let cut = |s: &str| match format {
                    LogFormat::Human => s[27..].to_owned(),
                    LogFormat::Json => s[s.find("\"level\"").unwrap()..].to_owned(),
                };
                assert_eq!(cut(&ours), cut(&theirs), "{format:?}");
            }
        }
    }
}
