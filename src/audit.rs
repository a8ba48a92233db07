//! Audit events: one typed [`AuditEvent`] per security event and one
//! [`emit`] that bounds what an attacker can cause and writes each line.
//!
//! Lines go to the tracing target `passgate::audit` and always begin with
//! `peer=ADDR reason=WORD` (`peer=local` for events of this machine's
//! operators), so a log watcher can anchor its pattern there: nothing a
//! client sends can come before them. A client-supplied user name is written
//! only when it is a clean name (letters, digits, `.` `_` `@` `+` `-`, at
//! most 64, not shaped like a secret); anything else is written as `#` and
//! a keyed hash (random key per process), so a name field holding
//! `peer=203.0.113.7`, a password typed in the wrong field or a bare token
//! never reaches the log. A user name sent beside something that is not an
//! app password is always hashed: it may be an account password.
//!
//! A client can cause `auth_failed` (and `rotated_reuse` and
//! `sign_in_failed`, counted with it), `rate_limited` (and
//! `sign_in_limited`), `web_refused`, `scope_denied` (and `limit_denied`,
//! counted with it) and `conn_limited` lines as fast as it can send requests
//! (measured before this gate: 80,000 lines, 10 MB, per second). So per
//! client address (IPv6: its /64) and second, the first line is always
//! written, the next ones while the address is within [`PER_PEER`] and all
//! addresses within [`GLOBAL`]; the rest are counted, and [`flush`] (called
//! every second by `serve`) writes one `event="suppressed"` line with the
//! counts. Addresses are tracked exactly in a map keyed by a keyed hash (no
//! attacker can choose to share a victim's budget); when [`MAX_PEERS`]
//! addresses are already tracked in one second, a new address's line is
//! suppressed and the address is listed (up to [`LISTED`]) in the summary.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use crate::clock::unix_now;

/// Lines per second for one client address (the first always passes).
pub const PER_PEER: u32 = 10;
/// Lines per second over all addresses, besides each address's first.
pub const GLOBAL: u32 = 200;
/// Addresses tracked per second.
pub const MAX_PEERS: usize = 65_536;
/// Untracked addresses named in one `suppressed` line.
pub const LISTED: usize = 16;

/// Who did something on this machine's side (not a network peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Through the running server's admin socket.
    AdminSocket,
    /// By the CLI on the store directly (no server running).
    Offline,
    /// By the gateway itself: a password a rotation replaced was presented
    /// with its right secret under `[auth] rotated_reuse = "revoke"` (the
    /// `rotated_reuse` line before it names the peer).
    RotatedReuse,
    /// SIGHUP sent to the server.
    Signal,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::AdminSocket => "admin-socket",
            Via::Offline => "offline",
            Via::RotatedReuse => "rotated-reuse",
            Via::Signal => "signal",
        }
    }
}

/// A client-supplied user name, and how far it can be believed to be one.
#[derive(Debug, Clone, Copy)]
pub enum User<'a> {
    /// Sent beside a well-formed app password, or a stored record's owner:
    /// written when clean, else hashed.
    Name(&'a str),
    /// Sent beside something that is not an app password: may be an
    /// account password typed in the wrong field, so always hashed.
    Unchecked(&'a str),
    /// No user name at all.
    None,
}

/// Every audit event, with its fields.
#[derive(Debug, Clone, Copy)]
pub enum AuditEvent<'a> {
    /// A credential refused (401), or a request with two `Authorization` headers.
    AuthFailed {
        peer: IpAddr,
        reason: &'static str,
        user: User<'a>,
        id: &'a str,
    },
    /// A request refused by the brute-force limits (429).
    RateLimited {
        peer: IpAddr,
        user: User<'a>,
        retry_after: Duration,
    },
    /// An app password presented on a `web` route (403).
    WebRefused { peer: IpAddr, route: &'a str },
    /// A valid app password without a scope the route needs (403).
    ScopeDenied {
        peer: IpAddr,
        user: &'a str,
        id: &'a str,
        missing: &'a str,
    },
    /// A valid app password used outside its limits (403): `reason` is
    /// `address-not-allowed` or `repository-not-allowed`; `resource` is the
    /// route's resource, `None` when the route names none or it was not read.
    LimitDenied {
        peer: IpAddr,
        reason: &'static str,
        user: &'a str,
        id: &'a str,
        resource: Option<&'a str>,
    },
    /// A password revoked by a rotation presented with its right secret:
    /// `current` is the lineage's current password, `action` `logged` or
    /// `revoked-current`. Only a holder of the old secret gets here, yet a
    /// client can repeat it at will: budgeted with `auth_failed`.
    RotatedReuse {
        peer: IpAddr,
        user: &'a str,
        id: &'a str,
        current: Option<&'a str>,
        action: &'static str,
    },
    /// A connection, or an HTTP/2 request, refused by a connection cap.
    ConnLimited {
        peer: IpAddr,
        limit: &'static str,
        open: usize,
    },
    /// A failed sign-in to the self-service page (anyone can cause one).
    SignInFailed {
        peer: IpAddr,
        method: &'static str,
        error: &'a str,
    },
    /// A sign-in to the self-service page not started (no pre-login record
    /// written): `limit` is `per-address` (429), `in-progress` (503) or
    /// `per-user` (a signed-in user's step-ups, 429).
    SignInLimited {
        peer: IpAddr,
        limit: &'static str,
        retry_after: Duration,
    },
    /// An admin-socket client of another uid refused.
    AdminRefused { uid: Option<u32> },
    /// An app password created.
    Created {
        via: Via,
        id: &'a str,
        user: &'a str,
        name: &'a str,
        scopes: &'a str,
    },
    /// An app password revoked.
    Revoked { via: Via, id: &'a str },
    /// An app password rotated: `successor` created, `id` revoked now or
    /// at the end of its grace.
    Rotated {
        via: Via,
        id: &'a str,
        successor: &'a str,
        user: &'a str,
        name: &'a str,
    },
    /// The config file re-read and put in force; `restart` lists the
    /// changed keys that keep their running values until a restart
    /// (space-separated, empty for none).
    Reloaded {
        via: Via,
        file: &'a str,
        restart: &'a str,
    },
    /// A reload refused: the running config stays in force.
    ReloadRefused {
        via: Via,
        file: &'a str,
        error: &'a str,
    },
    /// A copy of the store written (`store backup`, or before a migration).
    BackedUp { via: Via, path: &'a str },
    /// An app password created on the self-service page; `peer` is the
    /// client (after trusted proxies), `user` the signed-in user.
    PageCreated {
        peer: IpAddr,
        id: &'a str,
        user: &'a str,
        name: &'a str,
        scopes: &'a str,
    },
    /// An app password of `user` revoked on the self-service page by `by`
    /// (the user, or an admin).
    PageRevoked {
        peer: IpAddr,
        id: &'a str,
        user: &'a str,
        by: &'a str,
    },
    /// An app password rotated on the self-service page by its user.
    PageRotated {
        peer: IpAddr,
        id: &'a str,
        successor: &'a str,
        user: &'a str,
        name: &'a str,
    },
    /// A sign-in to the self-service page (OIDC); `step_up`: a renewed one
    /// before creating a password.
    SignedIn {
        peer: IpAddr,
        user: &'a str,
        method: &'static str,
        step_up: bool,
    },
    /// A sign-out from the self-service page.
    SignedOut {
        peer: IpAddr,
        user: &'a str,
        method: &'static str,
    },
}

/// The events a client can cause at will, budgeted per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AuthFailed,
    RateLimited,
    WebRefused,
    ScopeDenied,
    ConnLimited,
}

const KINDS: usize = 5;

impl AuditEvent<'_> {
    /// The budget this event is charged to, if a client can cause it.
    fn budget(&self) -> Option<(Kind, IpAddr)> {
        match *self {
            AuditEvent::AuthFailed { peer, .. } => Some((Kind::AuthFailed, peer)),
            AuditEvent::RateLimited { peer, .. } => Some((Kind::RateLimited, peer)),
            AuditEvent::WebRefused { peer, .. } => Some((Kind::WebRefused, peer)),
            AuditEvent::ScopeDenied { peer, .. } => Some((Kind::ScopeDenied, peer)),
            AuditEvent::LimitDenied { peer, .. } => Some((Kind::ScopeDenied, peer)),
            AuditEvent::RotatedReuse { peer, .. } => Some((Kind::AuthFailed, peer)),
            AuditEvent::ConnLimited { peer, .. } => Some((Kind::ConnLimited, peer)),
            AuditEvent::SignInFailed { peer, .. } => Some((Kind::AuthFailed, peer)),
            AuditEvent::SignInLimited { peer, .. } => Some((Kind::RateLimited, peer)),
            // Each needs a signed-in user or this machine's operator.
            AuditEvent::AdminRefused { .. }
            | AuditEvent::Created { .. }
            | AuditEvent::Revoked { .. }
            | AuditEvent::Rotated { .. }
            | AuditEvent::Reloaded { .. }
            | AuditEvent::ReloadRefused { .. }
            | AuditEvent::BackedUp { .. }
            | AuditEvent::PageCreated { .. }
            | AuditEvent::PageRevoked { .. }
            | AuditEvent::PageRotated { .. }
            | AuditEvent::SignedIn { .. }
            | AuditEvent::SignedOut { .. } => None,
        }
    }
}

/// Writes the line for `event`, unless its address's budget is spent (then
/// it is counted for the next `event="suppressed"` line).
pub fn emit(event: AuditEvent<'_>) {
    if let Some((kind, peer)) = event.budget() {
        if !GATE.admit(kind, peer, unix_now()) {
            return;
        }
    }
    write(&event);
}

/// [`emit`] for the CLI working on the store itself (no server running, no
/// subscriber installed): the line goes to stderr, human format.
pub fn emit_offline(event: AuditEvent<'_>) {
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || emit(event));
}

/// The one place audit lines are formatted: `peer` and `reason` first.
fn write(event: &AuditEvent<'_>) {
    match *event {
        AuditEvent::AuthFailed {
            peer,
            reason,
            user,
            id,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = %reason, event = "auth_failed", user = %Shown(user), id = %id);
        }
        AuditEvent::RateLimited {
            peer,
            user,
            retry_after,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = "rate-limited", event = "rate_limited", user = %Shown(user), retry_after_s = retry_after.as_secs());
        }
        AuditEvent::WebRefused { peer, route } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = "app-password-on-web-route", event = "web_refused", route = %route);
        }
        AuditEvent::ScopeDenied {
            peer,
            user,
            id,
            missing,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = "missing-scope", event = "scope_denied", user = %Shown(User::Name(user)), id = %id, missing = %missing);
        }
        AuditEvent::LimitDenied {
            peer,
            reason,
            user,
            id,
            resource,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = %reason, event = "limit_denied", user = %Shown(User::Name(user)), id = %id, resource = ?resource.unwrap_or("-"));
        }
        AuditEvent::RotatedReuse {
            peer,
            user,
            id,
            current,
            action,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = "rotated-reuse", event = "rotated_reuse", user = %Shown(User::Name(user)), id = %id, current = %current.unwrap_or("-"), action);
        }
        AuditEvent::ConnLimited { peer, limit, open } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = %limit, event = "conn_limited", open);
        }
        AuditEvent::SignInFailed {
            peer,
            method,
            error,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = "sign-in-failed", event = "sign_in_failed", method, error = ?error, via = "web");
        }
        AuditEvent::SignInLimited {
            peer,
            limit,
            retry_after,
        } => {
            tracing::warn!(target: "passgate::audit", peer = %Peer(peer), reason = %limit, event = "sign_in_limited", method = "oidc", retry_after_s = retry_after.as_secs(), via = "web");
        }
        AuditEvent::AdminRefused { uid } => {
            let uid = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
            tracing::warn!(target: "passgate::audit", peer = "local", reason = "wrong-uid", event = "admin_refused", uid = %uid);
        }
        AuditEvent::Created {
            via,
            id,
            user,
            name,
            scopes,
        } => {
            tracing::info!(target: "passgate::audit", peer = "local", reason = via.as_str(), event = "created", id = %id, user = ?user, name = ?name, scopes = %scopes);
        }
        AuditEvent::Revoked { via, id } => {
            tracing::info!(target: "passgate::audit", peer = "local", reason = via.as_str(), event = "revoked", id = %id);
        }
        AuditEvent::Rotated {
            via,
            id,
            successor,
            user,
            name,
        } => {
            tracing::info!(target: "passgate::audit", peer = "local", reason = via.as_str(), event = "rotated", id = %id, successor = %successor, user = ?user, name = ?name);
        }
        AuditEvent::Reloaded { via, file, restart } => {
            tracing::info!(target: "passgate::audit", peer = "local", reason = via.as_str(), event = "reloaded", outcome = "applied", file = %file, needs_restart = %restart);
        }
        AuditEvent::ReloadRefused { via, file, error } => {
            tracing::error!(target: "passgate::audit", peer = "local", reason = via.as_str(), event = "reload_refused", outcome = "refused", file = %file, error = %error);
        }
        AuditEvent::BackedUp { via, path } => {
            tracing::info!(target: "passgate::audit", peer = "local", reason = via.as_str(), event = "backed_up", path = %path);
        }
        AuditEvent::PageCreated {
            peer,
            id,
            user,
            name,
            scopes,
        } => {
            tracing::info!(target: "passgate::audit", peer = %Peer(peer), reason = "web", event = "created", id = %id, user = ?user, name = ?name, scopes = %scopes, via = "web");
        }
        AuditEvent::PageRevoked { peer, id, user, by } => {
            tracing::info!(target: "passgate::audit", peer = %Peer(peer), reason = "web", event = "revoked", id = %id, user = ?user, by = ?by, via = "web");
        }
        AuditEvent::PageRotated {
            peer,
            id,
            successor,
            user,
            name,
        } => {
            tracing::info!(target: "passgate::audit", peer = %Peer(peer), reason = "web", event = "rotated", id = %id, successor = %successor, user = ?user, name = ?name, via = "web");
        }
        AuditEvent::SignedIn {
            peer,
            user,
            method,
            step_up,
        } => {
            let reason = if step_up { "step-up" } else { "sign-in" };
            tracing::info!(target: "passgate::audit", peer = %Peer(peer), reason, event = "signed_in", user = ?user, method, step_up, via = "web");
        }
        AuditEvent::SignedOut { peer, user, method } => {
            tracing::info!(target: "passgate::audit", peer = %Peer(peer), reason = "sign-out", event = "signed_out", user = ?user, method, via = "web");
        }
    }
}

/// Writes one `event="suppressed"` line if anything was held back since the
/// last call, and forgets the addresses of past seconds.
pub fn flush() {
    let s = GATE.take_suppressed(unix_now());
    if s.total() == 0 {
        return;
    }
    let listed = s
        .unlisted
        .iter()
        .map(|p| Peer(*p).to_string())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::warn!(
        target: "passgate::audit",
        peer = "-",
        reason = "budget",
        event = "suppressed",
        auth_failed = s.counts[Kind::AuthFailed as usize],
        rate_limited = s.counts[Kind::RateLimited as usize],
        web_refused = s.counts[Kind::WebRefused as usize],
        scope_denied = s.counts[Kind::ScopeDenied as usize],
        conn_limited = s.counts[Kind::ConnLimited as usize],
        untracked_peers = %listed,
        more_untracked_peers = s.more_unlisted,
        "audit lines past each address's first per second, over {PER_PEER}/s per address or {GLOBAL}/s in all, were counted, not written"
    );
}

/// The per-second budgets and the counts of what they held back.
#[derive(Debug)]
struct Gate {
    per_peer: u32,
    global: u32,
    max_peers: usize,
    /// Address key → (second, lines in it); keyed SipHash, pruned by `flush`.
    peers: DashMap<u128, (u64, u32)>,
    tracked: AtomicUsize,
    /// `(second << 32 | count)` of the lines past each address's first.
    total: AtomicU64,
    suppressed: [AtomicU64; KINDS],
    /// Addresses whose first line was held back (map full), and how many more.
    unlisted: Mutex<(Vec<IpAddr>, u64)>,
}

/// What [`Gate::take_suppressed`] found since the last call.
#[derive(Debug, Default, PartialEq, Eq)]
struct Suppressed {
    counts: [u64; KINDS],
    unlisted: Vec<IpAddr>,
    more_unlisted: u64,
}

impl Suppressed {
    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

static GATE: LazyLock<Gate> = LazyLock::new(|| Gate::new(PER_PEER, GLOBAL, MAX_PEERS));

impl Gate {
    fn new(per_peer: u32, global: u32, max_peers: usize) -> Gate {
        Gate {
            per_peer,
            global,
            max_peers,
            peers: DashMap::new(),
            tracked: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            suppressed: [const { AtomicU64::new(0) }; KINDS],
            unlisted: Mutex::new((Vec::new(), 0)),
        }
    }

    /// True when a line for `kind` from `peer` may be written in second `now_s`.
    fn admit(&self, kind: Kind, peer: IpAddr, now_s: u64) -> bool {
        let ok = match self.count(peer, now_s) {
            Some(1) => true,
            Some(n) if n <= self.per_peer => charge(&self.total, now_s, self.global),
            Some(_) => false,
            None => {
                self.list(peer);
                false
            }
        };
        if !ok {
            self.suppressed[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// This address's lines in second `now_s`, this one included; `None`
    /// when it is not tracked and there is no room to track it.
    fn count(&self, peer: IpAddr, now_s: u64) -> Option<u32> {
        let key = peer_key(peer);
        let bump = |e: &mut (u64, u32)| {
            if e.0 != now_s {
                *e = (now_s, 0);
            }
            e.1 = e.1.saturating_add(1);
            e.1
        };
        if let Some(mut e) = self.peers.get_mut(&key) {
            return Some(bump(&mut e));
        }
        if self.tracked.load(Ordering::Relaxed) >= self.max_peers {
            return None;
        }
        let mut e = self.peers.entry(key).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            (now_s, 0)
        });
        Some(bump(&mut e))
    }

    fn list(&self, peer: IpAddr) {
        let Ok(mut l) = self.unlisted.lock() else {
            return;
        };
        let peer = canonical(peer);
        if l.0.contains(&peer) {
            return;
        }
        if l.0.len() < LISTED {
            l.0.push(peer);
        } else {
            l.1 += 1;
        }
    }

    fn take_suppressed(&self, now_s: u64) -> Suppressed {
        self.peers.retain(|_, e| e.0 >= now_s);
        self.tracked.store(self.peers.len(), Ordering::Relaxed);
        let (unlisted, more_unlisted) = self
            .unlisted
            .lock()
            .map(|mut l| (std::mem::take(&mut l.0), std::mem::take(&mut l.1)))
            .unwrap_or_default();
        Suppressed {
            counts: std::array::from_fn(|i| self.suppressed[i].swap(0, Ordering::Relaxed)),
            unlisted,
            more_unlisted,
        }
    }
}

/// Counts one line in the `(second << 32 | count)` word; true while the
/// second's count is within `limit`.
fn charge(word: &AtomicU64, now_s: u64, limit: u32) -> bool {
    let second = now_s & u64::from(u32::MAX);
    let count_in = |w: u64| {
        if w >> 32 == second {
            w & 0xffff_ffff
        } else {
            0
        }
    };
    let prev = word
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            Some(second << 32 | (count_in(w) + 1).min(u64::from(u32::MAX)))
        })
        .unwrap_or_else(|w| w);
    count_in(prev) < u64::from(limit)
}

/// The budget key of an address: IPv4 (mapped or not) as itself, IPv6 by its /64.
fn peer_key(peer: IpAddr) -> u128 {
    match canonical(peer) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) | 1 << 127,
        IpAddr::V6(v6) => u128::from(v6) >> 64,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A peer address as written: IPv4-mapped IPv6 as IPv4.
struct Peer(IpAddr);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        canonical(self.0).fmt(f)
    }
}

/// A user name as written: clean names as they are, anything else hashed.
struct Shown<'a>(User<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            User::None => f.write_str("-"),
            User::Name(n) if is_clean(n) => f.write_str(n),
            User::Name(n) | User::Unchecked(n) => {
                let h = blake3::keyed_hash(&HASH_KEY, n.as_bytes());
                f.write_str("#")?;
                for b in &h.as_bytes()[..6] {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Per-process key of the user-name hash: lines of one run can be
/// correlated, nothing can be looked up in a table.
static HASH_KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

/// A user name safe to write as it is: short, a plain character set (no
/// space, `=`, quote or control character), and not shaped like a secret.
pub fn is_clean(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
        && !looks_like_secret(name)
}

/// A token, or a long run of letters and digits of both cases and digits
/// (a bare app-password secret, a generated password).
fn looks_like_secret(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if lower.contains("pgap") {
        return true;
    }
    let longest_run = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| {
            run.bytes().any(|b| b.is_ascii_digit())
                && run.bytes().any(|b| b.is_ascii_uppercase())
                && run.bytes().any(|b| b.is_ascii_lowercase())
        })
        .map(str::len)
        .max()
        .unwrap_or(0);
    longest_run >= 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_peer_budget_then_suppressed_count() {
        let g = Gate::new(3, 100, 100);
        let a = ip("192.0.2.1");
        let admitted = (0..10)
            .filter(|_| g.admit(Kind::AuthFailed, a, 1000))
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(g.take_suppressed(1000).counts[Kind::AuthFailed as usize], 7);
        assert_eq!(
            g.take_suppressed(1000),
            Suppressed::default(),
            "counts reset"
        );
    }

    #[test]
    fn next_second_refills() {
        let g = Gate::new(2, 100, 100);
        let a = ip("192.0.2.1");
        assert!(g.admit(Kind::RateLimited, a, 5));
        assert!(g.admit(Kind::RateLimited, a, 5));
        assert!(!g.admit(Kind::RateLimited, a, 5));
        assert!(g.admit(Kind::RateLimited, a, 6));
        assert_eq!(g.take_suppressed(6).counts[Kind::RateLimited as usize], 1);
    }

    #[test]
    fn the_first_line_of_every_address_is_written_past_the_global_budget() {
        // Issue #21: 22 addresses x 10 lines used the whole global budget and
        // a 23rd address's failures left no line naming it.
        let g = Gate::new(10, 200, 1000);
        for i in 0..25u32 {
            for _ in 0..10 {
                g.admit(
                    Kind::AuthFailed,
                    IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                    9,
                );
            }
        }
        assert!(g.admit(Kind::AuthFailed, ip("203.0.113.23"), 9));
        assert!(
            !g.admit(Kind::AuthFailed, ip("203.0.113.23"), 9),
            "global budget spent"
        );
        let admitted = (0..500u32)
            .filter(|i| {
                g.admit(
                    Kind::WebRefused,
                    IpAddr::from((0x0b00_0000 + i).to_be_bytes()),
                    9,
                )
            })
            .count();
        assert_eq!(admitted, 500, "one line each");
    }

    #[test]
    fn untracked_addresses_are_named_in_the_summary() {
        let g = Gate::new(10, 200, 2);
        assert!(g.admit(Kind::AuthFailed, ip("192.0.2.1"), 4));
        assert!(g.admit(Kind::AuthFailed, ip("192.0.2.2"), 4));
        for i in 0..40u32 {
            assert!(!g.admit(
                Kind::AuthFailed,
                IpAddr::from((0xc633_6400 + i).to_be_bytes()),
                4
            ));
        }
        let s = g.take_suppressed(4);
        assert_eq!(s.unlisted.len(), LISTED);
        assert_eq!(s.unlisted[0], ip("198.51.100.0"));
        assert_eq!(s.more_unlisted, 40 - LISTED as u64);
        // Once the next second's flush forgot the old entries, there is room.
        g.take_suppressed(5);
        assert!(g.admit(Kind::AuthFailed, ip("198.51.100.39"), 5));
    }

    #[test]
    fn ipv6_64_shares_a_budget_and_mapped_v4_is_v4() {
        assert_eq!(
            peer_key(ip("2001:db8::1")),
            peer_key(ip("2001:db8::ffff:2"))
        );
        assert_eq!(peer_key(ip("::ffff:192.0.2.1")), peer_key(ip("192.0.2.1")));
        assert_ne!(peer_key(ip("::c000:201")), peer_key(ip("192.0.2.1")));
        let g = Gate::new(1, 100, 100);
        assert!(g.admit(Kind::ScopeDenied, ip("2001:db8::1"), 3));
        assert!(!g.admit(Kind::ScopeDenied, ip("2001:db8::2"), 3));
    }

    #[test]
    fn only_clean_names_are_written_as_they_are() {
        for clean in ["alice", "first.last@example.com", "ci-bot_2", "a+b"] {
            assert!(is_clean(clean), "{clean}");
            assert_eq!(Shown(User::Name(clean)).to_string(), clean);
        }
        for dirty in [
            "mallory peer=203.0.113.77 reason=x",
            "a=b",
            "\"quoted\"",
            "-leading",
            "",
            "pgap_abc",
            "PGAPabc",
            "Zx81kQ2mPq7rT5vW9yB3nD6fH0jL4sG8", // a bare 32-character secret
            "ünïcode",
            &"a".repeat(65),
        ] {
            assert!(!is_clean(dirty), "{dirty}");
            let shown = Shown(User::Name(dirty)).to_string();
            assert!(shown.starts_with('#') && shown.len() == 13, "{shown}");
        }
        assert!(Shown(User::Unchecked("alice")).to_string().starts_with('#'));
        let (a, b) = (
            Shown(User::Unchecked("hunter2")),
            Shown(User::Unchecked("hunter2")),
        );
        assert_eq!(a.to_string(), b.to_string(), "the same name, the same hash");
        assert_ne!(a.to_string(), Shown(User::Unchecked("hunter3")).to_string());
        assert_eq!(Shown(User::None).to_string(), "-");
    }

    /// One sample per variant; the index is the variant's place in this
    /// exhaustive match, so a new variant fails to compile here until it
    /// gets an index, and [`docs_list_every_audit_line_as_written`] fails
    /// until it gets a sample (and docs/logs.md a line).
    fn variant(e: &AuditEvent<'_>) -> usize {
        match e {
            AuditEvent::AuthFailed { .. } => 0,
            AuditEvent::RateLimited { .. } => 1,
            AuditEvent::WebRefused { .. } => 2,
            AuditEvent::ScopeDenied { .. } => 3,
            AuditEvent::LimitDenied { .. } => 4,
            AuditEvent::RotatedReuse { .. } => 5,
            AuditEvent::ConnLimited { .. } => 6,
            AuditEvent::SignInFailed { .. } => 7,
            AuditEvent::AdminRefused { .. } => 8,
            AuditEvent::Created { .. } => 9,
            AuditEvent::Revoked { .. } => 10,
            AuditEvent::Rotated { .. } => 11,
            AuditEvent::PageCreated { .. } => 12,
            AuditEvent::PageRevoked { .. } => 13,
            AuditEvent::PageRotated { .. } => 14,
            AuditEvent::SignedIn { .. } => 15,
            AuditEvent::SignedOut { .. } => 16,
            AuditEvent::Reloaded { .. } => 17,
            AuditEvent::ReloadRefused { .. } => 18,
            AuditEvent::BackedUp { .. } => 19,
            AuditEvent::SignInLimited { .. } => 20,
        }
    }
    const VARIANTS: usize = 21;

    fn samples() -> Vec<AuditEvent<'static>> {
        let peer = ip("192.0.2.1");
        let mut out = vec![
            AuditEvent::AuthFailed {
                peer,
                reason: "wrong-secret",
                user: User::Name("alice"),
                id: "abcdefghijkl",
            },
            AuditEvent::RateLimited {
                peer,
                user: User::None,
                retry_after: Duration::from_secs(3),
            },
            AuditEvent::WebRefused { peer, route: "web" },
            AuditEvent::ScopeDenied {
                peer,
                user: "alice",
                id: "abcdefghijkl",
                missing: "repository:write",
            },
            AuditEvent::LimitDenied {
                peer,
                reason: "repository-not-allowed",
                user: "alice",
                id: "abcdefghijkl",
                resource: Some("alice/b"),
            },
            AuditEvent::RotatedReuse {
                peer,
                user: "alice",
                id: "abcdefghijkl",
                current: Some("mnopqrstuvwx"),
                action: "logged",
            },
            AuditEvent::ConnLimited {
                peer,
                limit: "per-address",
                open: 9,
            },
            AuditEvent::SignInFailed {
                peer,
                method: "oidc",
                error: "state-mismatch",
            },
            AuditEvent::SignInLimited {
                peer,
                limit: "per-address",
                retry_after: Duration::from_secs(20),
            },
            AuditEvent::AdminRefused { uid: Some(1000) },
            AuditEvent::PageCreated {
                peer,
                id: "abcdefghijkl",
                user: "alice",
                name: "laptop",
                scopes: "repository:read",
            },
            AuditEvent::PageRevoked {
                peer,
                id: "abcdefghijkl",
                user: "bob",
                by: "root",
            },
            AuditEvent::PageRotated {
                peer,
                id: "abcdefghijkl",
                successor: "mnopqrstuvwx",
                user: "alice",
                name: "laptop",
            },
            AuditEvent::SignedIn {
                peer,
                user: "alice",
                method: "oidc",
                step_up: false,
            },
            AuditEvent::SignedOut {
                peer,
                user: "alice",
                method: "oidc",
            },
        ];
        for via in [Via::AdminSocket, Via::Offline, Via::RotatedReuse] {
            out.push(AuditEvent::Revoked {
                via,
                id: "abcdefghijkl",
            });
        }
        for via in [Via::AdminSocket, Via::Signal] {
            out.push(AuditEvent::Reloaded {
                via,
                file: "proxy.toml",
                restart: "",
            });
            out.push(AuditEvent::ReloadRefused {
                via,
                file: "proxy.toml",
                error: "proxy.toml:3: listen: bad",
            });
        }
        for via in [Via::AdminSocket, Via::Offline] {
            out.push(AuditEvent::BackedUp {
                via,
                path: "/var/backups/passgate.redb",
            });
            out.push(AuditEvent::Created {
                via,
                id: "abcdefghijkl",
                user: "alice",
                name: "laptop",
                scopes: "repository:read",
            });
            out.push(AuditEvent::Rotated {
                via,
                id: "abcdefghijkl",
                successor: "mnopqrstuvwx",
                user: "alice",
                name: "laptop",
            });
        }
        out
    }

    /// The line `write` produces for `event`, in the human format.
    fn line_of(event: &AuditEvent<'_>) -> String {
        let captured = crate::telemetry::capture::Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || write(event));
        captured.text().trim().to_owned()
    }

    /// The field names of a line (`peer reason event …`), and its event.
    fn shape(line: &str) -> (Vec<String>, String) {
        let mut keys = Vec::new();
        let mut event = String::new();
        for token in line.split_whitespace() {
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            if key == "event" {
                event = value.trim_matches('"').to_owned();
            }
            keys.push(key.to_owned());
        }
        (keys, event)
    }

    /// docs/logs.md lists, in its audit block, exactly the lines `write`
    /// produces: the same events with the same fields in the same order.
    #[test]
    fn docs_list_every_audit_line_as_written() {
        let samples = samples();
        let mut seen = [false; VARIANTS];
        for s in &samples {
            seen[variant(s)] = true;
        }
        assert!(
            seen.iter().all(|&s| s),
            "a variant without a sample: {seen:?}"
        );
        let docs = include_str!("../docs/logs.md");
        let block = docs
            .split("## Audit events")
            .nth(1)
            .and_then(|rest| rest.split("```").nth(1))
            .expect("docs/logs.md has an audit block");
        let documented: Vec<(Vec<String>, String)> = block
            .lines()
            .map(shape)
            .filter(|(_, event)| !event.is_empty() && event != "suppressed")
            .collect();
        let written: Vec<(Vec<String>, String)> =
            samples.iter().map(|s| shape(&line_of(s))).collect();
        for (s, w) in samples.iter().zip(&written) {
            assert_eq!(&w.0[..2], ["peer", "reason"], "{s:?}: {}", line_of(s));
            assert!(
                documented.contains(w),
                "docs/logs.md lacks the line {:?} (written: {})",
                w,
                line_of(s)
            );
        }
        for d in &documented {
            assert!(
                written.contains(d),
                "docs/logs.md lists a line no event writes: {d:?}"
            );
        }
    }
}
