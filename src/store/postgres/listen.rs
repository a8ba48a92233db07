//! The notification listener: one dedicated connection per gateway that
//! `LISTEN`s on the revocation channel and tells the [`Changes`] sink at once.
//!
//! A dropped connection is reconnected with exponential backoff. Revocations
//! made while it was down were never heard, so after every (re)connection
//! the sink is told to treat every verification cached until then as stale
//! (`Changes::resynced`): each is revalidated by one store read. A heartbeat
//! notices a connection that went silent without closing.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DbUrl, Health, CHANNEL, OP_TIMEOUT};
use crate::store::Changes;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Listens for ever (until the store's runtime stops).
pub(super) async fn run(
    url: DbUrl,
    connector: MakeRustlsConnect,
    sink: Arc<dyn Changes>,
    health: Arc<Health>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = session(&url, &connector, &*sink, &health, &mut backoff).await;
        health.listening(false);
        match outcome {
            Ok(()) => {
                tracing::warn!(db = %url, "revocation listener: connection closed; reconnecting")
            }
            Err(e) => {
                tracing::warn!(db = %url, error = %e, "revocation listener: connection lost; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, LISTEN, resync, then hand on every
/// notification until the connection ends.
async fn session(
    url: &DbUrl,
    connector: &MakeRustlsConnect,
    sink: &dyn Changes,
    health: &Health,
    backoff: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let mut pg = url.pg.clone();
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(OP_TIMEOUT);
    }
    let (client, mut conn) = pg.connect(connector.clone()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Drives the connection; notifications go out as soon as they are read.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // From here on every revocation is heard; whatever was cached before
        // may have missed one.
        health.listening(true);
        sink.resynced();
        *backoff = FIRST_BACKOFF;
        tracing::info!(db = %url, "revocation listener connected");
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        loop {
            tokio::select! {
                id = rx.recv() => match id {
                    Some(id) => sink.revoked(&id),
                    None => return Ok(()),
                },
                _ = beat.tick() => {
                    match tokio::time::timeout(OP_TIMEOUT, client.batch_execute("SELECT 1")).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    match driver.await {
        Ok(Err(e)) => Err(e),
        _ => result,
    }
}
