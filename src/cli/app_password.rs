//! `passgate app-password create|list|show|rotate|revoke`.
//!
//! While `serve` runs, every command goes through its admin socket (so a
//! revocation evicts the running cache at once); otherwise the CLI opens the
//! store file itself. Either way the same `manage` rules apply.

mod lifecycle;

use std::io::Write;

use http::{Method, StatusCode};

use super::{load, open_store_offline, store_message, AppPasswordCommand, Failure};
use crate::admin::{client, percent_encode, RevokedList};
use crate::audit::{self, AuditEvent};
use crate::config::Config;
use crate::manage::{self, CreateRequest, Created, Listed, ManageError, Revocation};
use crate::store::{Store, StoreError};

pub fn run(cmd: AppPasswordCommand) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start runtime: {e}")))?;
    runtime.block_on(dispatch(cmd))
}

async fn dispatch(cmd: AppPasswordCommand) -> Result<(), Failure> {
    match cmd {
        AppPasswordCommand::Create {
            config,
            user,
            name,
            scopes,
            expires_in,
            repos,
            allow_from,
            json,
        } => {
            let config = load(&config)?;
            let req = CreateRequest {
                user,
                name,
                scopes,
                expires_in: expires_in.map(|d| d.0.as_secs().max(1)),
                repos,
                allow_from,
            };
            let created: Created = match Via::open(&config).await? {
                Via::Socket(s) => {
                    let body =
                        serde_json::to_vec(&req).map_err(|e| Failure::Runtime(e.to_string()))?;
                    remote(
                        client::call(s, Method::POST, "/v1/app-passwords", Some(body)).await,
                        StatusCode::CREATED,
                    )?
                }
                Via::Store(store) => {
                    let created = local(manage::create(&store, &config, &req))?;
                    audit::emit_offline(AuditEvent::Created {
                        via: audit::Via::Offline,
                        id: &created.id,
                        user: &created.user,
                        name: &created.name,
                        scopes: &created.scopes.join(" "),
                    });
                    created
                }
            };
            print_created(&created, json)
        }
        AppPasswordCommand::List {
            config,
            user,
            status,
            expiring,
            json,
        } => {
            let config = load(&config)?;
            let expiring = expiring.map(|d| d.0.as_secs());
            let mut rows: Vec<Listed> = match Via::open(&config).await? {
                Via::Socket(s) => {
                    let uri = lifecycle::list_uri(user.as_deref(), expiring);
                    remote(
                        client::call(s, Method::GET, &uri, None).await,
                        StatusCode::OK,
                    )?
                }
                Via::Store(store) => local(manage::list(&store, user.as_deref(), expiring))?,
            };
            if let Some(s) = status {
                rows.retain(|r| r.status == s.as_str());
            }
            print_list(&rows, json)
        }
        AppPasswordCommand::Show { config, id, json } => lifecycle::show(&config, &id, json).await,
        AppPasswordCommand::Rotate {
            config,
            id,
            expires_in,
            grace,
            json,
        } => {
            let (expires_in, grace) = (expires_in.map(|d| d.0), grace.map(|d| d.0));
            lifecycle::rotate(&config, &id, expires_in, grace, json).await
        }
        AppPasswordCommand::Revoke {
            config,
            id,
            user,
            all: _,
        } => {
            let config = load(&config)?;
            match (id, user) {
                (Some(id), _) => {
                    local(manage::check_id(&id))?;
                    let r: Revocation = match Via::open(&config).await? {
                        Via::Socket(s) => {
                            let uri = format!("/v1/app-passwords/{}/revoke", percent_encode(&id));
                            remote(
                                client::call(s, Method::POST, &uri, None).await,
                                StatusCode::OK,
                            )?
                        }
                        Via::Store(store) => {
                            let r = local(manage::revoke(&store, &id))?;
                            if r.revoked_now {
                                audit::emit_offline(AuditEvent::Revoked {
                                    via: audit::Via::Offline,
                                    id: &r.id,
                                });
                            }
                            r
                        }
                    };
                    if r.revoked_now {
                        eprintln!("revoked app password {}", r.id);
                    } else {
                        eprintln!(
                            "app password {} was already revoked (at {})",
                            r.id, r.revoked_at
                        );
                    }
                    Ok(())
                }
                (None, Some(user)) => {
                    let list: RevokedList = match Via::open(&config).await? {
                        Via::Socket(s) => {
                            let body = serde_json::json!({ "user": user }).to_string().into_bytes();
                            remote(
                                client::call(s, Method::POST, "/v1/revoke-user", Some(body)).await,
                                StatusCode::OK,
                            )?
                        }
                        Via::Store(store) => {
                            let revoked = local(manage::revoke_user(&store, &user))?;
                            for id in &revoked {
                                audit::emit_offline(AuditEvent::Revoked {
                                    via: audit::Via::Offline,
                                    id,
                                });
                            }
                            RevokedList { revoked }
                        }
                    };
                    for id in &list.revoked {
                        println!("{id}");
                    }
                    eprintln!("revoked {} app password(s) of {user:?}", list.revoked.len());
                    Ok(())
                }
                (None, None) => Err(Failure::Usage(
                    "give an app password ID, or --user U --all".to_owned(),
                )),
            }
        }
    }
}

/// How this invocation reaches the store.
enum Via {
    Socket(tokio::net::UnixStream),
    Store(Store),
}

impl Via {
    async fn open(config: &Config) -> Result<Via, Failure> {
        match client::connect(&config.admin_socket).await {
            Ok(Some(s)) => return Ok(Via::Socket(s)),
            Ok(None) => {}
            Err(e) => {
                return Err(Failure::Runtime(format!(
                    "cannot reach admin socket {}: {e}",
                    config.admin_socket.display()
                )))
            }
        }
        match open_store_offline(config) {
            Ok(s) => Ok(Via::Store(s)),
            Err(e @ StoreError::Locked { .. }) => Err(Failure::Runtime(format!(
                "{e}; its admin socket {} does not answer",
                config.admin_socket.display()
            ))),
            Err(e) => Err(Failure::Runtime(store_message(config, &e))),
        }
    }
}

fn local<T>(r: Result<T, ManageError>) -> Result<T, Failure> {
    r.map_err(|e| {
        if e.is_usage() {
            Failure::Usage(e.to_string())
        } else {
            Failure::Runtime(e.to_string())
        }
    })
}

fn remote<T: serde::de::DeserializeOwned>(
    answer: std::io::Result<client::Answer>,
    want: StatusCode,
) -> Result<T, Failure> {
    let answer = answer.map_err(|e| Failure::Runtime(format!("admin socket: {e}")))?;
    if answer.status != want {
        let (msg, usage) = answer.error();
        return Err(if usage {
            Failure::Usage(msg)
        } else {
            Failure::Runtime(msg)
        });
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| Failure::Runtime(format!("admin socket sent an unreadable answer: {e}")))
}

fn print_created(c: &Created, json: bool) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        let text = serde_json::to_string(c).map_err(|e| Failure::Runtime(e.to_string()))?;
        writeln!(out, "{text}")
    } else {
        writeln!(out, "{}", c.password)
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Runtime(format!("cannot write the password: {e}")))?;
    if !json {
        eprintln!(
            "created app password {} for {:?}, name {:?}, scopes {}, expires {}",
            c.id,
            c.user,
            c.name,
            c.scopes.join(" "),
            c.expires_at.as_deref().unwrap_or("never")
        );
        eprintln!("this password is shown once; store it now");
    }
    Ok(())
}

fn print_list(rows: &[Listed], json: bool) -> Result<(), Failure> {
    let text = if json {
        serde_json::to_string(rows).map_err(|e| Failure::Runtime(e.to_string()))? + "\n"
    } else {
        table(rows)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::Runtime(e.to_string()))
}

fn table(rows: &[Listed]) -> String {
    let mut out = format!(
        "{:<12}  {:<16}  {:<20}  {:<30}  {:<20}  {:<20}  {:<38}  {}\n",
        "ID", "USER", "NAME", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "STATUS"
    );
    for r in rows {
        let last = match (&r.last_used_at, &r.last_used_addr) {
            (Some(t), Some(a)) => format!("{t} {a}"),
            (Some(t), None) => t.clone(),
            _ => "never".to_owned(),
        };
        out.push_str(&format!(
            "{:<12}  {:<16}  {:<20}  {:<30}  {:<20}  {:<20}  {:<38}  {}\n",
            r.id,
            r.user,
            r.name,
            r.scopes.join(","),
            r.created_at,
            r.expires_at.as_deref().unwrap_or("never"),
            last,
            lifecycle::status_cell(r)
        ));
        out.push_str(&lifecycle::older_addresses(
            r,
            12 + 16 + 20 + 30 + 20 + 20 + 2 * 6,
        ));
    }
    out
}
