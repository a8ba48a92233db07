//! Logging setup: tracing-subscriber to stderr, human or JSON, with a
//! redacting writer as the last line of defence.
//!
//! No code path logs a header, a query or a password. Should one ever slip
//! through, every line is scrubbed before it is written: anything after
//! `pgap_` that looks like a token, and the credentials after an
//! `Authorization:` / `Basic ` / `Bearer ` marker, become `[redacted]`.
//!
//! Access-log lines are formatted by their own thread ([`access`]); JSON
//! lines by [`json`], which types every field (strings, numbers, booleans).

use std::io::{self, Write};

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod access;
pub mod json;

/// Messages queued for the writer thread before a sender waits. The queue
/// is allocated and written in full at start (32 bytes a slot), so its
/// length is resident memory from the first second: 65,536 slots were
/// 2 MiB of idle RSS. A message is one event line or one access-log batch
/// (at most one per 5 ms [`access`] pause, 200 a second), and the
/// audit gate bounds what clients can cause; a full queue only means the
/// sink has stalled, where a longer one would only postpone the wait.
const WRITER_QUEUE: usize = 8192;

/// Keeps logging alive: dropping it drains the access-log queue, then
/// flushes the writer (in that order: fields drop in declaration order).
#[derive(Debug)]
pub struct LogGuard {
    _access: Option<access::AccessThread>,
    _writer: WorkerGuard,
}

/// Installs the global subscriber (`RUST_LOG` overrides the default `info`).
///
/// Lines are handed to a background thread that writes stderr, so a request
/// never waits on a `write(2)`; nothing is dropped (the channel applies
/// back-pressure when full). Keep the guard alive: dropping it flushes.
pub fn init(format: LogFormat) -> LogGuard {
    let (out, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(WRITER_QUEUE)
        .thread_name("passgate-log")
        .finish(io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting { out: out.clone() });
    let _ = match format {
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
    };
    LogGuard {
        _access: access::start(format, out),
        _writer: guard,
    }
}

/// Appends `line` to `batch`, scrubbed as [`Redacting`] scrubs every line.
fn push_scrubbed(batch: &mut String, line: &str) {
    if has_marker(line.as_bytes()) {
        batch.push_str(&redact(line));
    } else {
        batch.push_str(line);
    }
}

/// A `MakeWriter` whose writers scrub each formatted event before writing it.
#[derive(Debug, Clone)]
pub struct Redacting {
    out: NonBlocking,
}

impl<'a> MakeWriter<'a> for Redacting {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            buf: Vec::new(),
            out: self.out.clone(),
        }
    }
}

/// Buffers one event, redacts it and hands it on in one piece when dropped.
#[derive(Debug)]
pub struct LineWriter {
    buf: Vec<u8>,
    out: NonBlocking,
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // Fast path: nothing that could be a credential marker, hand it on as is.
        if !has_marker(&self.buf) {
            let _ = self.out.write_all(&self.buf);
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let _ = self.out.write_all(redact(&text).as_bytes());
    }
}

/// True when `buf` may hold a credential: `pgap_`, `basic` or `bearer` in any
/// case, or a run of 50+ letters and digits (a token without its prefix).
fn has_marker(buf: &[u8]) -> bool {
    let marker = buf.windows(5).any(|w| {
        w.eq_ignore_ascii_case(b"pgap_")
            || w.eq_ignore_ascii_case(b"basic")
            || w.eq_ignore_ascii_case(b"beare")
    });
    marker
        || longest_alnum_run(buf)
            >= crate::auth::token::TOKEN_LEN - crate::auth::token::PREFIX.len()
}

fn longest_alnum_run(buf: &[u8]) -> usize {
    let (mut best, mut run) = (0, 0);
    for b in buf {
        run = if b.is_ascii_alphanumeric() {
            run + 1
        } else {
            0
        };
        best = best.max(run);
    }
    best
}

/// Replaces token-like and credential-like substrings with `[redacted]`.
pub fn redact(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let at_run_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if let Some(n) = at_run_start
            .then(|| stripped_token_run(&line[i..]))
            .flatten()
        {
            out.push_str("[redacted]");
            i += n;
            continue;
        }
        if let Some(skip) = secret_at(&line[i..]) {
            out.push_str(&line[i..i + skip.keep]);
            out.push_str("[redacted]");
            i += skip.keep + skip.secret;
            continue;
        }
        let ch_len = utf8_len(bytes[i]);
        out.push_str(&line[i..(i + ch_len).min(line.len())]);
        i += ch_len;
    }
    out
}

struct Skip {
    keep: usize,
    secret: usize,
}

fn secret_at(s: &str) -> Option<Skip> {
    let lower_starts =
        |p: &str| s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    if lower_starts("pgap_") {
        let n = s[5..].bytes().take_while(u8::is_ascii_alphanumeric).count();
        return (n > 0).then_some(Skip { keep: 5, secret: n });
    }
    for marker in ["basic ", "bearer "] {
        if lower_starts(marker) {
            let n = s[marker.len()..]
                .bytes()
                .take_while(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'.' | b'~')
                })
                .count();
            return (n >= 8).then_some(Skip {
                keep: marker.len(),
                secret: n,
            });
        }
    }
    None
}

/// The length of the alphanumeric run at the start of `s` when it holds a
/// token without its `pgap_` prefix (50 characters with a valid checksum),
/// as when someone pastes a token into the user-name field.
fn stripped_token_run(s: &str) -> Option<usize> {
    let body = crate::auth::token::TOKEN_LEN - crate::auth::token::PREFIX.len();
    let run = s.bytes().take_while(u8::is_ascii_alphanumeric).count();
    let found = (0..=run.checked_sub(body)?).any(|start| {
        let candidate = format!("{}{}", crate::auth::token::PREFIX, &s[start..start + body]);
        crate::auth::token::parse(&candidate).is_ok()
    });
    found.then_some(run)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_credentials_are_scrubbed() {
        let t = "pgap_ABCDEFabcdef0123456789012345678901234567890123456789";
        assert_eq!(redact(&format!("x={t} y")), "x=pgap_[redacted] y");
        assert_eq!(
            redact("authorization: Basic YWxpY2U6aHVudGVyMg=="),
            "authorization: Basic [redacted]"
        );
        assert_eq!(redact("Bearer abcdefgh.ijk"), "Bearer [redacted]");
        assert_eq!(redact("basic auth ok"), "basic auth ok");
        assert_eq!(redact("ünïcode pgap_"), "ünïcode pgap_");
        let token = crate::auth::token::NewToken::generate();
        let stripped = &token.token().expose()[5..];
        assert_eq!(
            redact(&format!("user=\"{stripped}\" x")),
            "user=\"[redacted]\" x"
        );
        assert_eq!(redact(&format!("/a/x{stripped}y/b")), "/a/[redacted]/b");
        let fifty = "a".repeat(50);
        assert_eq!(redact(&fifty), fifty, "no checksum, not a token");
    }

    #[test]
    fn marker_detection_is_case_insensitive() {
        assert!(has_marker(b"x PGAP_abc"));
        assert!(has_marker(b"Authorization: BASIC abc"));
        assert!(has_marker(b"bearer abc"));
        assert!(!has_marker(b"GET /alice/repo.git/info/refs status=200"));
        assert!(has_marker(
            "user=\""
                .to_owned()
                .as_bytes()
                .iter()
                .chain([b'a'; 50].iter())
                .copied()
                .collect::<Vec<_>>()
                .as_slice()
        ));
    }
}

/// In unit tests: what a `tracing-subscriber` writes, kept in memory to be
/// read back (`with_writer(move || captured.clone())`).
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// Everything written so far, as text.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
