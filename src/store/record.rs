//! The stored record of one app password, and the status derived from it.
//!
//! A record carries the argon2id PHC string of the secret, never the secret
//! itself; its `Debug` output redacts even that.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// Revocation time, unix seconds.
    pub revoked_at: Option<u64>,
    /// Time of the most recent successful use, unix seconds.
    pub last_used_at: Option<u64>,
    /// Client address of the most recent successful use.
    pub last_used_addr: Option<String>,
}

impl AppPassword {
    /// The password's status at `now` (unix seconds).
    ///
    /// Revocation wins over expiry; a password is expired from `expires_at`
    /// on (`now >= expires_at`).
    #[must_use]
    pub fn status(&self, now: u64) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at.is_some_and(|at| now >= at) {
            Status::Expired
        } else {
            Status::Active
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
