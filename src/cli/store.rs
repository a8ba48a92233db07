//! `passgate store copy --to URL [--force]`: moves the configured store
//! (normally the redb file) into a PostgreSQL database, keeping ids, hashes,
//! times, revocations and last use. A database that already holds app
//! passwords is refused unless `--force` (which replaces them).
//!
//! `passgate store backup FILE`: a consistent copy of the redb store, written
//! by the running server (admin socket) or, with none running, from the
//! file directly. FILE must not exist. A PostgreSQL store is refused with a
//! pointer to pg_dump (exit 1).

use std::path::{Path, PathBuf};

use http::{Method, StatusCode};

use super::{load, open_store_offline, store_message, Failure, StoreCommand};
use crate::admin::{client, BackedUp, BackupRequest};
use crate::audit::{self, AuditEvent, Via};
use crate::config::{Config, StoreConfig};
use crate::store::{DbUrl, StoreError};

pub fn run(cmd: StoreCommand) -> Result<(), Failure> {
    match cmd {
        StoreCommand::Backup { config, file } => {
            let config = load(&config)?;
            let file = std::path::absolute(&file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let backed_up = backup(&config, &file)?;
            eprintln!(
                "backed up {} app password(s) to {}",
                backed_up.app_passwords,
                backed_up.path.display()
            );
            Ok(())
        }
        StoreCommand::Copy { config, to, force } => {
            let url = DbUrl::parse(&to).map_err(|e| Failure::Usage(format!("--to: {e}")))?;
            let config = load(&config)?;
            let store = open_store_offline(&config).map_err(|e| match e {
                StoreError::Locked { .. } => {
                    Failure::Runtime(format!("{e}; stop it before copying its store"))
                }
                e => Failure::Runtime(store_message(&config, &e)),
            })?;
            let copied = store.copy_to(&url, force).map_err(|e| match e {
                StoreError::NotEmpty { .. } => Failure::Runtime(e.to_string()),
                e => Failure::Runtime(store_message(&config, &e)),
            })?;
            eprintln!(
                "copied {copied} app password(s) from {} to {}",
                store.location(),
                url.shown()
            );
            Ok(())
        }
    }
}

fn backup(config: &Config, file: &Path) -> Result<BackedUp, Failure> {
    if let StoreConfig::Postgres { url } = &config.store {
        let e = StoreError::BackupPostgres {
            url: url.shown().to_owned(),
        };
        return Err(Failure::Runtime(e.to_string()));
    }
    if file.symlink_metadata().is_ok() {
        let e = StoreError::BackupExists { path: file.into() };
        return Err(Failure::Runtime(e.to_string()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start runtime: {e}")))?;
    let socket = runtime
        .block_on(client::connect(&config.admin_socket))
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    if let Some(stream) = socket {
        let body = serde_json::to_vec(&BackupRequest {
            path: file.to_owned(),
        })
        .map_err(|e| Failure::Runtime(e.to_string()))?;
        let answer = runtime
            .block_on(client::call(stream, Method::POST, "/v1/backup", Some(body)))
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        if answer.status != StatusCode::CREATED {
            return Err(Failure::Runtime(answer.error().0));
        }
        return serde_json::from_slice(&answer.body)
            .map_err(|e| Failure::Runtime(format!("unreadable answer from the server: {e}")));
    }
    // No server: the store file directly (its lock keeps a server from starting meanwhile).
    let store =
        open_store_offline(config).map_err(|e| Failure::Runtime(store_message(config, &e)))?;
    let app_passwords = store.backup(file).map_err(|e| {
        let mut msg = store_message(config, &e);
        if let Some(cause) = std::error::Error::source(&e) {
            msg.push_str(&format!(": {cause}"));
        }
        Failure::Runtime(msg)
    })?;
    audit::emit_offline(AuditEvent::BackedUp {
        via: Via::Offline,
        path: &file.display().to_string(),
    });
    Ok(BackedUp {
        path: PathBuf::from(file),
        app_passwords,
    })
}
