//! `passgate reload`: asks the running server, through its admin socket, to
//! re-read its config file, and reports the outcome: exit 0 when applied
//! (with any key that needs a restart on stderr), 1 when refused (with the
//! reason, `file:line: key: message`) or when no server runs.

use http::{Method, StatusCode};

use super::{ConfigArg, Failure};
use crate::admin::client;
use crate::config::admin_socket_of;
use crate::reload::Applied;

pub fn run(arg: &ConfigArg) -> Result<(), Failure> {
    // Not `load`: the file may be the broken one the server is about to refuse.
    let socket = admin_socket_of(&arg.config).map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start runtime: {e}")))?;
    let answer = runtime.block_on(async {
        let stream = client::connect(&socket).await?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no passgate server runs at admin socket {}: nothing to reload",
                    socket.display()
                ),
            )
        })?;
        client::call(stream, Method::POST, "/v1/reload", None).await
    });
    let answer = answer.map_err(|e| Failure::Runtime(e.to_string()))?;
    if answer.status != StatusCode::OK {
        let (message, _) = answer.error();
        return Err(Failure::Runtime(format!(
            "reload refused, the running config stays in force: {message}"
        )));
    }
    let applied: Applied = serde_json::from_slice(&answer.body)
        .map_err(|e| Failure::Runtime(format!("unreadable answer from the server: {e}")))?;
    for w in &applied.warnings {
        eprintln!("warning: {w}");
    }
    for r in &applied.restart {
        eprintln!("needs a restart: {r}");
    }
    eprintln!("config reloaded");
    Ok(())
}
