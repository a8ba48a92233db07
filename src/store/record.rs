//! The stored record of one app password, and the status derived from it.
//!
//! A record carries the argon2id PHC string of the secret, never the secret
//! itself; its `Debug` output redacts even that.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// How many distinct client addresses a record remembers ([`AppPassword::last_used`]).
pub const LAST_USED_KEPT: usize = 5;

/// One app password as kept in the store.
///
/// Serialized with serde_json into the `app_passwords` table; adding an
/// optional field later is backwards compatible (mark it `#[serde(default)]`),
/// anything else needs a schema migration in `store.rs`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPassword {
    /// 12-character public id.
    pub id: String,
    /// The user the password belongs to.
    pub user: String,
    /// Label chosen by the user; unique among the user's active passwords.
    pub name: String,
    /// Scopes as chosen at creation; never edited.
    pub scopes: Vec<String>,
    /// argon2id PHC string of the secret. Never printed by `Debug`.
    pub hash: String,
    /// Creation time, unix seconds.
    pub created_at: u64,
    /// Expiry time, unix seconds: the password stops working at this instant.
    pub expires_at: Option<u64>,
    /// Revocation time, unix seconds. May lie in the future: a password
    /// rotated with a grace period is revoked from then on.
    pub revoked_at: Option<u64>,
    /// Time of the most recent successful use, unix seconds.
    pub last_used_at: Option<u64>,
    /// Client address of the most recent successful use.
    pub last_used_addr: Option<String>,
    /// The last [`LAST_USED_KEPT`] distinct client addresses, newest first,
    /// each with the time it was last seen (schema v2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_used: Vec<LastUse>,
    /// Repositories (`OWNER/NAME`, `OWNER/*`) the password is limited to;
    /// empty: no limit (every record before schema v2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// Client networks the password is limited to; empty: no limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<IpNet>,
    /// The password this one replaced by `rotate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<String>,
    /// The password that replaced this one by `rotate`; following it leads
    /// to the lineage's current password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
}

/// One remembered client address of an app password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUse {
    pub addr: String,
    /// Unix seconds.
    pub at: u64,
}

impl AppPassword {
    /// The password's status at `now` (unix seconds).
    ///
    /// Revocation wins over expiry; a password is expired from `expires_at`
    /// on (`now >= expires_at`).
    #[must_use]
    pub fn status(&self, now: u64) -> Status {
        Status::at(self.revoked_at, self.expires_at, now)
    }
}

impl AppPassword {
    /// Revoked at `now`: a revocation time in the future (a rotation's
    /// grace period) is not yet a revocation.
    #[must_use]
    pub fn is_revoked(&self, now: u64) -> bool {
        self.revoked_at.is_some_and(|at| now >= at)
    }

    /// When the password stops working, if it is to: its expiry or a
    /// revocation scheduled by a rotation's grace, whichever comes first.
    #[must_use]
    pub fn stops_at(&self) -> Option<u64> {
        match (self.expires_at, self.revoked_at) {
            (Some(e), Some(r)) => Some(e.min(r)),
            (e, r) => e.or(r),
        }
    }

    /// Merges one use into [`Self::last_used`] (and the most-recent fields):
    /// the address moves to the front with its newer time; at most
    /// [`LAST_USED_KEPT`] addresses stay. A use older than what is kept for
    /// that address changes nothing.
    pub fn record_use(&mut self, addr: &str, at: u64) {
        if let Some(i) = self.last_used.iter().position(|u| u.addr == addr) {
            if self.last_used[i].at > at {
                return;
            }
            self.last_used.remove(i);
        }
        let pos = self
            .last_used
            .iter()
            .position(|u| u.at <= at)
            .unwrap_or(self.last_used.len());
        self.last_used.insert(
            pos,
            LastUse {
                addr: addr.to_owned(),
                at,
            },
        );
        self.last_used.truncate(LAST_USED_KEPT);
        if self.last_used_at.is_none_or(|last| at >= last) {
            self.last_used_at = Some(at);
            self.last_used_addr = Some(addr.to_owned());
        }
    }
}

impl fmt::Debug for AppPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppPassword")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("last_used_at", &self.last_used_at)
            .field("last_used_addr", &self.last_used_addr)
            .field("last_used", &self.last_used)
            .field("repos", &self.repos)
            .field("allow_from", &self.allow_from)
            .field("rotated_from", &self.rotated_from)
            .field("rotated_to", &self.rotated_to)
            .finish()
    }
}

/// Status of an app password at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Usable: neither revoked nor expired.
    Active,
    /// Past its `expires_at`.
    Expired,
    /// Revoked (whether or not it has also expired).
    Revoked,
}

impl Status {
    /// The status at `now` of a password revoked at `revoked_at` (possibly
    /// later: a rotation's grace) and expiring at `expires_at`: revocation
    /// wins over expiry, and each holds from its instant on.
    #[must_use]
    pub fn at(revoked_at: Option<u64>, expires_at: Option<u64>, now: u64) -> Status {
        if revoked_at.is_some_and(|at| now >= at) {
            Status::Revoked
        } else if expires_at.is_some_and(|at| now >= at) {
            Status::Expired
        } else {
            Status::Active
        }
    }

    /// The lowercase name, as shown to users and in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many app passwords have each status at one time
/// ([`crate::store::Store::count_by_status`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub active: u64,
    pub expired: u64,
    pub revoked: u64,
}

impl StatusCounts {
    /// Counts one more password of status `s`.
    pub fn add(&mut self, s: Status) {
        match s {
            Status::Active => self.active += 1,
            Status::Expired => self.expired += 1,
            Status::Revoked => self.revoked += 1,
        }
    }

    /// Every status with its count, in a fixed order.
    #[must_use]
    pub fn by_status(&self) -> [(Status, u64); 3] {
        [
            (Status::Active, self.active),
            (Status::Expired, self.expired),
            (Status::Revoked, self.revoked),
        ]
    }
}
