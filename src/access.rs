//! One arm per access kind: `app-password`, `web`, `public`, `deny`,
//! `introspect`.
//!
//! This is where a matched route's demand meets the request's credentials:
//! its scopes and the repository it names (its `resource`) go to the
//! authenticator as one [`Demand`]. `introspect` answers with a JSON
//! description of the presented password ([`introspection`]).
//! `web` routes refuse anything that looks like an app password wherever it
//! appears (any `Authorization` scheme, Basic user or password, Bearer, another
//! header, the query), so an app password can never sign in to the web UI.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::Full;
use serde::Serialize;

use crate::audit::{self, AuditEvent};
use crate::auth::cache::{Recent, Verified};
use crate::auth::{token, Demand, Repo};
use crate::error::Reject;
use crate::gateway::Gateway;
use crate::metrics::{self, AuthOutcome};
use crate::path::NormalPath;
use crate::routes::{Access, Route};
use crate::scopes::ScopeSet;

/// On every response to a request authorised by a password that stops
/// working at some time: that time, RFC 3339 UTC.
pub const EXPIRES_HEADER: HeaderName = HeaderName::from_static("x-app-password-expires");

/// What a request may carry upstream.
#[derive(Debug)]
pub enum Grant {
    /// Forwarded without an identity (`web`, `public`).
    Anonymous,
    /// An authenticated app password with the route's scopes.
    AppPassword(Arc<Verified>),
    /// A valid app password on an `introspect` route: answered by passgate.
    Introspect(Arc<Verified>),
}

impl Grant {
    /// The `X-App-Password-Expires` value, for a password that expires.
    pub fn expires_header(&self) -> Option<&HeaderValue> {
        match self {
            Grant::AppPassword(v) | Grant::Introspect(v) => v.expires_header.as_ref(),
            Grant::Anonymous => None,
        }
    }
}

/// Decides the request's fate on its route.
pub async fn check(
    gw: &Gateway,
    route: &Route,
    path: &NormalPath,
    headers: &HeaderMap,
    query: Option<&str>,
    client: IpAddr,
    recent: &Recent,
) -> Result<Grant, Reject> {
    match route.access {
        Access::Deny => Err(Reject::Denied),
        Access::Public => Ok(Grant::Anonymous),
        Access::Web => {
            if presents_app_password(headers, query) {
                audit::emit(AuditEvent::WebRefused {
                    peer: client,
                    route: &route.name,
                });
                return Err(Reject::WebAppPassword);
            }
            Ok(Grant::Anonymous)
        }
        Access::AppPassword => {
            let repo = match &route.resource {
                Some(resource) => Repo::Named(resource, path),
                None => Repo::Unnamed,
            };
            let demand = Demand {
                scopes: route.required,
                repo,
            };
            let verified = gw
                .auth
                .authenticate(headers, client, demand, Some(recent))
                .await;
            metrics::record_auth(outcome(&verified));
            verified.map(Grant::AppPassword)
        }
        Access::Introspect => {
            let demand = Demand::scopes(ScopeSet::EMPTY);
            let verified = gw
                .auth
                .authenticate(headers, client, demand, Some(recent))
                .await;
            metrics::record_auth(outcome(&verified));
            verified.map(Grant::Introspect)
        }
    }
}

/// The metrics label of an authentication's result.
fn outcome<T>(result: &Result<T, Reject>) -> AuthOutcome {
    let Err(reject) = result else {
        return AuthOutcome::Success;
    };
    match reject {
        Reject::Unauthorized(m) if *m == crate::auth::INVALID => AuthOutcome::Invalid,
        Reject::Unauthorized(_) => AuthOutcome::Missing,
        Reject::RateLimited { .. } => AuthOutcome::RateLimited,
        Reject::Overloaded { .. } => AuthOutcome::Overloaded,
        Reject::MissingScope { .. } => AuthOutcome::MissingScope,
        Reject::AddressNotAllowed { .. } => AuthOutcome::AddressNotAllowed,
        Reject::RepoNotAllowed { .. } => AuthOutcome::RepoNotAllowed,
        Reject::StoreUnavailable => AuthOutcome::StoreUnavailable,
        _ => AuthOutcome::BadRequest,
    }
}

/// What an `introspect` route answers: the presented password, never a
/// secret or a hash.
#[derive(Debug, Serialize)]
struct Introspection<'a> {
    id: &'a str,
    user: &'a str,
    name: &'a str,
    scopes: &'a [String],
    created_at: String,
    /// When it stops working (its expiry, or the end of a rotation's grace).
    expires_at: Option<String>,
    repos: &'a [String],
    allow_from: Vec<String>,
}

/// The JSON answer of an `introspect` route for a verified password (one
/// store read: name and creation time are not kept in the cache).
pub async fn introspection(
    gw: &Gateway,
    verified: &Verified,
) -> Result<Response<Full<Bytes>>, Reject> {
    let store = gw.store.clone();
    let id = verified.id.to_string();
    let record = match tokio::task::spawn_blocking(move || store.get(&id)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return Err(Reject::Unauthorized(crate::auth::INVALID)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store lookup failed");
            return Err(Reject::StoreUnavailable);
        }
        Err(e) => {
            tracing::error!(error = %e, "store lookup task failed");
            return Err(Reject::StoreUnavailable);
        }
    };
    let stamp = crate::manage::timestamp;
    let body = Introspection {
        id: &record.id,
        user: &record.user,
        name: &record.name,
        scopes: &record.scopes,
        created_at: stamp(record.created_at),
        expires_at: record.stops_at().map(stamp),
        repos: &record.repos,
        allow_from: record.allow_from.iter().map(ToString::to_string).collect(),
    };
    let json = serde_json::to_vec(&body).map_err(|e| {
        tracing::error!(error = %e, "cannot encode an introspection");
        Reject::StoreUnavailable
    })?;
    let mut resp = Response::new(Full::new(Bytes::from(json)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = &verified.expires_header {
        h.insert(EXPIRES_HEADER, v.clone());
    }
    Ok(resp)
}

/// True when any credential, header value or the query carries something with
/// the app-password shape: the `pgap_` prefix in any case, or the 50 characters
/// after it with a valid checksum (the prefix stripped).
pub fn presents_app_password(headers: &HeaderMap, query: Option<&str>) -> bool {
    let in_credentials = crate::auth::basic::any_presented_credential(headers, looks_like_token);
    in_credentials
        || headers.values().any(|v| contains_prefix(v.as_bytes()))
        || query.is_some_and(|q| contains_prefix(q.as_bytes()))
}

fn looks_like_token(s: &str) -> bool {
    if contains_prefix(s.as_bytes()) {
        return true;
    }
    let body_len = token::TOKEN_LEN - token::PREFIX.len();
    s.len() == body_len && token::parse(&format!("{}{s}", token::PREFIX)).is_ok()
}

fn contains_prefix(hay: &[u8]) -> bool {
    hay.windows(token::PREFIX.len())
        .any(|w| w.eq_ignore_ascii_case(token::PREFIX.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use http::HeaderValue;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn token_shapes_are_seen_everywhere() {
        let t = token::NewToken::generate();
        let tok = t.token().expose();
        assert!(presents_app_password(
            &with_auth(&basic("alice", tok)),
            None
        ));
        assert!(presents_app_password(&with_auth(&basic(tok, "")), None));
        assert!(presents_app_password(
            &with_auth(&format!("Bearer {tok}")),
            None
        ));
        assert!(
            presents_app_password(&with_auth(&basic("alice", &tok[5..])), None),
            "prefix stripped"
        );
        assert!(presents_app_password(
            &with_auth(&basic("alice", "PGAP_whatever")),
            None
        ));
        let mut h = HeaderMap::new();
        h.insert("private-token", HeaderValue::from_str(tok).unwrap());
        assert!(presents_app_password(&h, None));
        assert!(presents_app_password(
            &HeaderMap::new(),
            Some(&format!("access_token={tok}"))
        ));
    }

    #[test]
    fn ordinary_logins_pass() {
        assert!(!presents_app_password(
            &with_auth(&basic("alice", "hunter2")),
            None
        ));
        assert!(!presents_app_password(&HeaderMap::new(), Some("page=2")));
    }
}
