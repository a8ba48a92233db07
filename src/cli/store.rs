//! `passgate store copy --to URL [--force]`: moves the configured store
//! (normally the redb file) into a PostgreSQL database, keeping ids, hashes,
//! times, revocations and last use. A database that already holds app
//! passwords is refused unless `--force` (which replaces them).

use super::{load, open_store, store_message, Failure, StoreCommand};
use crate::store::{DbUrl, StoreError};

pub fn run(cmd: StoreCommand) -> Result<(), Failure> {
    match cmd {
        StoreCommand::Copy { config, to, force } => {
            let url = DbUrl::parse(&to).map_err(|e| Failure::Usage(format!("--to: {e}")))?;
            let config = load(&config)?;
            let store = open_store(&config).map_err(|e| match e {
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
