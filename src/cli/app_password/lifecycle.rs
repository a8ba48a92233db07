//! `app-password show`, `rotate` and the `list` additions (`--expiring`,
//! the expiring-soon mark, the older last-used addresses): the lifecycle of
//! one password after its creation.
//!
//! Like the other subcommands, each goes through the admin socket while
//! `serve` runs (so the running cache forgets a rotated password at once)
//! and opens the store itself otherwise. `rotate` prints the successor only
//! after the store committed it.

use std::io::Write;
use std::time::Duration;

use http::{Method, StatusCode};

use super::{local, print_created, remote, Via};
use crate::admin::{client, percent_encode};
use crate::audit::{self, AuditEvent};
use crate::cli::{load, ConfigArg, Failure};
use crate::manage::{self, Created, Listed, RotateRequest};

/// The admin-socket URI of a listing.
pub(super) fn list_uri(user: Option<&str>, expiring: Option<u64>) -> String {
    let mut params = Vec::new();
    if let Some(u) = user {
        params.push(format!("user={}", percent_encode(u)));
    }
    if let Some(secs) = expiring {
        params.push(format!("expiring={secs}"));
    }
    if params.is_empty() {
        "/v1/app-passwords".to_owned()
    } else {
        format!("/v1/app-passwords?{}", params.join("&"))
    }
}

/// `app-password show ID [--json]`.
pub(super) async fn show(config: &ConfigArg, id: &str, json: bool) -> Result<(), Failure> {
    let config = load(config)?;
    let row: Listed = match Via::open(&config).await? {
        Via::Socket(s) => {
            let uri = format!("/v1/app-passwords/{}", percent_encode(id));
            remote(
                client::call(s, Method::GET, &uri, None).await,
                StatusCode::OK,
            )?
        }
        Via::Store(store) => local(manage::show(&store, id))?,
    };
    let text = if json {
        serde_json::to_string(&row).map_err(|e| Failure::Runtime(e.to_string()))? + "\n"
    } else {
        details(&row)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::Runtime(e.to_string()))
}

/// `app-password rotate ID [--expires-in D] [--grace D] [--json]`.
pub(super) async fn rotate(
    config: &ConfigArg,
    id: &str,
    expires_in: Option<Duration>,
    grace: Option<Duration>,
    json: bool,
) -> Result<(), Failure> {
    let config = load(config)?;
    let req = RotateRequest {
        expires_in: expires_in.map(|d| d.as_secs().max(1)),
        grace: grace.map(|d| d.as_secs()),
    };
    let created: Created = match Via::open(&config).await? {
        Via::Socket(s) => {
            let uri = format!("/v1/app-passwords/{}/rotate", percent_encode(id));
            let body = serde_json::to_vec(&req).map_err(|e| Failure::Runtime(e.to_string()))?;
            remote(
                client::call(s, Method::POST, &uri, Some(body)).await,
                StatusCode::CREATED,
            )?
        }
        Via::Store(store) => {
            let created = local(manage::rotate(&store, &config, id, &req))?;
            audit::emit_offline(AuditEvent::Rotated {
                via: audit::Via::Offline,
                id,
                successor: &created.id,
                user: &created.user,
                name: &created.name,
            });
            created
        }
    };
    print_created(&created, json)?;
    if !json {
        let when = match req.grace.filter(|&g| g > 0) {
            Some(g) => format!(
                "stops working in {}",
                humantime::format_duration(Duration::from_secs(g))
            ),
            None => "is revoked".to_owned(),
        };
        eprintln!("rotated {id} to {}; {id} {when}", created.id);
    }
    Ok(())
}

/// The STATUS cell of a listing: the status, marked when it stops soon.
pub(super) fn status_cell(r: &Listed) -> String {
    if r.expiring_soon {
        format!("{} (expires within 7 days)", r.status)
    } else {
        r.status.clone()
    }
}

/// The remembered addresses after the newest, one per line under the LAST
/// USED column (which starts at `indent`).
pub(super) fn older_addresses(r: &Listed, indent: usize) -> String {
    r.last_used
        .iter()
        .skip(1)
        .map(|u| format!("{:indent$}{} {}\n", "", u.at, u.addr))
        .collect()
}

/// `show` in text: one field per line.
fn details(r: &Listed) -> String {
    let none = |v: &[String]| {
        if v.is_empty() {
            "any".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<13} {v}\n"));
    line("id", &r.id);
    line("user", &r.user);
    line("name", &r.name);
    line("status", &status_cell(r));
    line("scopes", &r.scopes.join(" "));
    line("repos", &none(&r.repos));
    line("allow-from", &none(&r.allow_from));
    line("created", &r.created_at);
    line("expires", r.expires_at.as_deref().unwrap_or("never"));
    if let Some(at) = &r.revoked_at {
        line("revoked", at);
    }
    if let Some(from) = &r.rotated_from {
        line("rotated from", from);
    }
    if let Some(to) = &r.rotated_to {
        line("rotated to", to);
    }
    if r.last_used.is_empty() {
        line("last used", "never");
    }
    for u in &r.last_used {
        line("last used", &format!("{} {}", u.at, u.addr));
    }
    out
}
