//! App-password management: the rules at creation, listing and revocation,
//! shared by the admin socket (while `serve` runs) and the CLI (when it does not).
//!
//! Rules enforced here: user name 1–255 printable characters without a colon;
//! name 1–100 characters, unique among the user's active passwords (the store
//! checks that inside its transaction); at least one scope, each declared in
//! `[scopes]`; `expires_in` bounded by `[auth] max_lifetime` when that is set
//! (and then required to be finite); `repos` and `allow_from` as `limits.rs`
//! reads them. A password is committed to disk before it is returned, so
//! whatever the caller prints survives a crash; so is a rotation's successor.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::auth::token::NewToken;
use crate::auth::verify::{hash_secret, HashError};
use crate::clock::unix_now;
use crate::config::Config;
use crate::limits::{self, LimitError};
use crate::scopes::ScopeError;
use crate::store::{AppPassword, Revoked, Rotated, Status, Store, StoreError};

/// `list` marks passwords that expire within this many seconds (7 days).
pub const EXPIRING_SOON: u64 = 7 * 86_400;

/// What `create` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub user: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Seconds until expiry; `None` = no expiry (unless `max_lifetime` is set).
    pub expires_in: Option<u64>,
    /// `OWNER/NAME` or `OWNER/*`; empty: any repository.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Addresses or CIDR blocks; empty: any client address.
    #[serde(default)]
    pub allow_from: Vec<String>,
}

/// What `rotate` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Seconds until the successor expires; `None`: the old one's lifetime.
    pub expires_in: Option<u64>,
    /// Seconds the old password keeps working; `None` or 0: revoked at once.
    pub grace: Option<u64>,
}

/// The one answer that carries the password; shown once, never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub id: String,
    pub password: String,
    pub user: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub repos: Vec<String>,
    pub allow_from: Vec<String>,
    /// The password this one replaced (`rotate`), else `None`.
    pub rotated_from: Option<String>,
}

/// One remembered client address and when it was last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsedFrom {
    pub addr: String,
    pub at: String,
}

/// A listing row: never a secret, never a hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub user: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_addr: Option<String>,
    pub status: String,
    #[serde(default)]
    pub repos: Vec<String>,
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// The last distinct client addresses, newest first.
    #[serde(default)]
    pub last_used: Vec<UsedFrom>,
    #[serde(default)]
    pub rotated_from: Option<String>,
    #[serde(default)]
    pub rotated_to: Option<String>,
    /// Active and expiring (or, in a rotation's grace, stopping) within 7 days.
    #[serde(default)]
    pub expiring_soon: bool,
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocation {
    pub id: String,
    /// False when it had been revoked before.
    pub revoked_now: bool,
    pub revoked_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("invalid user name: use 1-255 printable characters without ':'")]
    BadUser,
    #[error("invalid name: use 1-100 characters without control characters")]
    BadName,
    #[error("at least one --scope is required (known scopes: {known})")]
    NoScopes { known: String },
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("expiry of {asked} exceeds [auth] max_lifetime of {max}")]
    TooLong { asked: String, max: String },
    #[error("[auth] max_lifetime is {max}: give --expires-in no longer than that")]
    ExpiryRequired { max: String },
    /// Not a 12-character id. The argument itself is never shown: it may be
    /// a whole password pasted where its id belongs (#20).
    #[error("{}", bad_id_message(.0))]
    BadId(String),
    #[error("no app password with id {0}")]
    NotFound(String),
    #[error("user {user:?} already has an active app password named {name:?}")]
    DuplicateName { user: String, name: String },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("app password {id} is {status}: only an active password can be rotated")]
    NotActive { id: String, status: Status },
    #[error("app password {id} was already rotated (to {to}); rotate {to} instead")]
    AlreadyRotated { id: String, to: String },
    #[error("management task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ManageError {
    /// True for mistakes in what was asked (exit 2 / HTTP 400) rather than failures.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ManageError::BadUser
                | ManageError::BadName
                | ManageError::NoScopes { .. }
                | ManageError::Scope(_)
                | ManageError::TooLong { .. }
                | ManageError::ExpiryRequired { .. }
                | ManageError::BadId(_)
                | ManageError::Limit(_)
                | ManageError::NotActive { .. }
                | ManageError::AlreadyRotated { .. }
        )
    }
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DuplicateName { user, name } => ManageError::DuplicateName { user, name },
            other => ManageError::Store(other),
        }
    }
}

/// Creates a password: validates, hashes (blocking, ~tens of ms), commits.
pub fn create(store: &Store, config: &Config, req: &CreateRequest) -> Result<Created, ManageError> {
    validate_user(&req.user)?;
    let name_len = req.name.chars().count();
    if !(1..=100).contains(&name_len) || req.name.chars().any(char::is_control) {
        return Err(ManageError::BadName);
    }
    if req.scopes.is_empty() {
        return Err(ManageError::NoScopes {
            known: config.scopes.all_names().join(", "),
        });
    }
    config.scopes.required(&req.scopes)?;
    let mut scopes = req.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let mut repos = req
        .repos
        .iter()
        .map(|r| limits::parse_repo(r))
        .collect::<Result<Vec<_>, _>>()?;
    repos.sort();
    repos.dedup();
    let mut allow_from = req
        .allow_from
        .iter()
        .map(|c| limits::parse_cidr(c))
        .collect::<Result<Vec<_>, _>>()?;
    allow_from.sort();
    allow_from.dedup();
    let expires_in = expiry(req.expires_in, config.auth.max_lifetime)?;
    let (token, hash) = new_secret(config)?;
    let now = unix_now();
    let record = AppPassword {
        id: token.id().to_owned(),
        user: req.user.clone(),
        name: req.name.clone(),
        scopes,
        hash,
        created_at: now,
        expires_at: expires_in.map(|d| now.saturating_add(d)),
        revoked_at: None,
        last_used_at: None,
        last_used_addr: None,
        last_used: Vec::new(),
        repos,
        allow_from,
        rotated_from: None,
        rotated_to: None,
    };
    store.insert(&record, now)?;
    Ok(created(&record, &token))
}

/// Replaces the active password `id` by a successor with the same user,
/// name, scopes and limits, committed before it is returned; the old one
/// stops at once or after `grace`. Returns the successor (shown once, like
/// `create`) and the old record's id.
pub fn rotate(
    store: &Store,
    config: &Config,
    id: &str,
    req: &RotateRequest,
) -> Result<Created, ManageError> {
    if !crate::auth::token::is_valid_id(id) {
        return Err(ManageError::BadId(id.to_owned()));
    }
    let old = store
        .get(id)?
        .ok_or_else(|| ManageError::NotFound(id.to_owned()))?;
    // The old lifetime by default, so a 30-day password rotates into a 30-day one.
    let lifetime = req.expires_in.or_else(|| {
        old.expires_at
            .map(|e| e.saturating_sub(old.created_at).max(1))
    });
    let expires_in = expiry(lifetime, config.auth.max_lifetime)?;
    let (token, hash) = new_secret(config)?;
    let now = unix_now();
    let successor = AppPassword {
        id: token.id().to_owned(),
        hash,
        created_at: now,
        expires_at: expires_in.map(|d| now.saturating_add(d)),
        revoked_at: None,
        last_used_at: None,
        last_used_addr: None,
        last_used: Vec::new(),
        rotated_from: Some(old.id.clone()),
        rotated_to: None,
        ..old.clone()
    };
    let revoke_at = now.saturating_add(req.grace.unwrap_or(0));
    match store.rotate(&old.id, &successor, now, revoke_at)? {
        Rotated::Now(_) => Ok(created(&successor, &token)),
        Rotated::NotFound => Err(ManageError::NotFound(id.to_owned())),
        Rotated::NotActive(status) => Err(ManageError::NotActive {
            id: id.to_owned(),
            status,
        }),
        Rotated::AlreadyRotated(to) => Err(ManageError::AlreadyRotated {
            id: id.to_owned(),
            to,
        }),
    }
}

/// Every password, or a user's; with `expiring`, only active ones that stop
/// within that many seconds.
pub fn list(
    store: &Store,
    user: Option<&str>,
    expiring: Option<u64>,
) -> Result<Vec<Listed>, ManageError> {
    let now = unix_now();
    let within = |r: &AppPassword| match expiring {
        None => true,
        Some(secs) => {
            r.status(now) == Status::Active
                && r.stops_at()
                    .is_some_and(|at| at <= now.saturating_add(secs))
        }
    };
    Ok(store
        .list(user)?
        .iter()
        .filter(|r| within(r))
        .map(|r| listed(r, now))
        .collect())
}

/// One password, never its secret or hash.
pub fn show(store: &Store, id: &str) -> Result<Listed, ManageError> {
    if !crate::auth::token::is_valid_id(id) {
        return Err(ManageError::BadId(id.to_owned()));
    }
    let rec = store
        .get(id)?
        .ok_or_else(|| ManageError::NotFound(id.to_owned()))?;
    Ok(listed(&rec, unix_now()))
}

fn new_secret(config: &Config) -> Result<(NewToken, String), ManageError> {
    let token = NewToken::generate();
    let hash = hash_secret(token.secret(), &config.auth.argon2)?;
    Ok((token, hash))
}

fn created(r: &AppPassword, token: &NewToken) -> Created {
    Created {
        id: r.id.clone(),
        password: token.token().expose().to_owned(),
        user: r.user.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        created_at: timestamp(r.created_at),
        expires_at: r.expires_at.map(timestamp),
        repos: r.repos.clone(),
        allow_from: r.allow_from.iter().map(ToString::to_string).collect(),
        rotated_from: r.rotated_from.clone(),
    }
}

/// One record as a listing row.
pub fn list_row(r: &AppPassword) -> Listed {
    listed(r, unix_now())
}

pub fn revoke(store: &Store, id: &str) -> Result<Revocation, ManageError> {
    check_id(id)?;
    match store.revoke(id, unix_now())? {
        Revoked::Now(r) => Ok(Revocation {
            id: r.id,
            revoked_now: true,
            revoked_at: timestamp(r.revoked_at.unwrap_or_else(unix_now)),
        }),
        Revoked::Already { revoked_at } => Ok(Revocation {
            id: id.to_owned(),
            revoked_now: false,
            revoked_at: timestamp(revoked_at),
        }),
        Revoked::NotFound => Err(ManageError::NotFound(id.to_owned())),
    }
}

pub fn revoke_user(store: &Store, user: &str) -> Result<Vec<String>, ManageError> {
    validate_user(user)?;
    Ok(store.revoke_user(user, unix_now())?)
}

/// An app password's public id: 12 base62 characters. The CLI checks it
/// before anything leaves the process, so a pasted password never travels.
pub fn check_id(id: &str) -> Result<(), ManageError> {
    if crate::auth::token::is_valid_id(id) {
        Ok(())
    } else {
        Err(ManageError::BadId(id.to_owned()))
    }
}

/// The user-name rule of DESIGN.md: 1–255 printable characters, no colon.
pub fn validate_user(user: &str) -> Result<(), ManageError> {
    if crate::user::is_valid(user) {
        Ok(())
    } else {
        Err(ManageError::BadUser)
    }
}

/// Why `arg` is not an id, without repeating it: a pasted password would
/// land in terminal scrollback and logs. A token-shaped argument (with or
/// without its `pgap_` prefix) is named as a password and only its public
/// 12-character id part is shown.
fn bad_id_message(arg: &str) -> String {
    use crate::auth::token::{self, has_token_shape, is_valid_id, ID_LEN, PREFIX, TOKEN_LEN};
    const ID_RULE: &str = "an id is 12 characters from 0-9 A-Z a-z, as `app-password list` shows";
    let arg = arg.trim();
    let unprefixed =
        arg.len() == TOKEN_LEN - PREFIX.len() && token::parse(&format!("{PREFIX}{arg}")).is_ok();
    if !has_token_shape(arg) && !unprefixed {
        return format!("the argument is not an app password id: {ID_RULE}");
    }
    let start = if unprefixed { 0 } else { PREFIX.len() };
    match arg.get(start..start + ID_LEN).filter(|id| is_valid_id(id)) {
        Some(id) => format!(
            "the argument is a whole app password, not its id (not shown; \
             a password on a command line stays in shell history): its id is {id}"
        ),
        None => format!("the argument looks like an app password, not its id: {ID_RULE}"),
    }
}

fn expiry(asked: Option<u64>, max: Option<Duration>) -> Result<Option<u64>, ManageError> {
    match (asked, max) {
        (Some(0), _) => Err(ManageError::TooLong {
            asked: "0s".into(),
            max: "a positive duration".into(),
        }),
        (Some(a), Some(m)) if a > m.as_secs() => Err(ManageError::TooLong {
            asked: crate::config::format_duration(Duration::from_secs(a)),
            max: crate::config::format_duration(m),
        }),
        (None, Some(m)) => Err(ManageError::ExpiryRequired {
            max: crate::config::format_duration(m),
        }),
        (a, _) => Ok(a),
    }
}

fn listed(r: &AppPassword, now: u64) -> Listed {
    Listed {
        id: r.id.clone(),
        user: r.user.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        created_at: timestamp(r.created_at),
        expires_at: r.expires_at.map(timestamp),
        revoked_at: r.revoked_at.map(timestamp),
        last_used_at: r.last_used_at.map(timestamp),
        last_used_addr: r.last_used_addr.clone(),
        status: r.status(now).to_string(),
        repos: r.repos.clone(),
        allow_from: r.allow_from.iter().map(ToString::to_string).collect(),
        last_used: r
            .last_used
            .iter()
            .map(|u| UsedFrom {
                addr: u.addr.clone(),
                at: timestamp(u.at),
            })
            .collect(),
        rotated_from: r.rotated_from.clone(),
        rotated_to: r.rotated_to.clone(),
        expiring_soon: r.status(now) == Status::Active
            && r.stops_at()
                .is_some_and(|at| at <= now.saturating_add(EXPIRING_SOON)),
    }
}

/// RFC 3339 UTC, seconds precision.
pub fn timestamp(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Seconds since the epoch of `t` (for tests and callers holding a `SystemTime`).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_rule() {
        assert!(validate_user("alice").is_ok());
        assert!(validate_user("Ünïcødé user").is_ok());
        assert!(validate_user(&"a".repeat(255)).is_ok());
        for bad in ["", "a:b", "a\nb", "a\u{7f}", &"a".repeat(256)] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expiry_rule() {
        let day = 86_400;
        assert_eq!(expiry(None, None).unwrap(), None);
        assert_eq!(expiry(Some(day), None).unwrap(), Some(day));
        assert!(expiry(Some(0), None).is_err());
        let max = Some(Duration::from_secs(90 * day));
        assert!(matches!(
            expiry(None, max),
            Err(ManageError::ExpiryRequired { .. })
        ));
        assert!(matches!(
            expiry(Some(91 * day), max),
            Err(ManageError::TooLong { .. })
        ));
        assert_eq!(expiry(Some(90 * day), max).unwrap(), Some(90 * day));
    }

    #[test]
    fn a_bad_id_is_never_echoed() {
        let token = NewToken::generate();
        let full = token.token().expose().to_owned();
        let id = token.id().to_owned();
        for (arg, names_id) in [
            (full.clone(), true),
            (format!(" {full}\n"), true),
            (full[5..].to_owned(), true),
            (full[..30].to_owned(), true),
            (format!("PGAP_{}", &full[5..]), true),
            ("pgap_!!".to_owned(), false),
            ("hunter2-secret".to_owned(), false),
        ] {
            let shown = ManageError::BadId(arg.clone()).to_string();
            assert!(!shown.contains(arg.trim()), "{shown}");
            assert!(!shown.contains(token.secret()), "{shown}");
            assert_eq!(shown.contains(&id), names_id, "{arg}: {shown}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
    }
}
