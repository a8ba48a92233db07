//! One arm per access kind: `app-password`, `web`, `public`, `deny`.
//!
//! This is where a matched route's demand meets the request's credentials.
//! `web` routes refuse anything that looks like an app password wherever it
//! appears (any `Authorization` scheme, Basic user or password, Bearer, another
//! header, the query), so an app password can never sign in to the web UI.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::audit::{self, AuditEvent};
use crate::auth::cache::Verified;
use crate::auth::token;
use crate::error::Reject;
use crate::gateway::Gateway;
use crate::routes::{Access, Route};

/// What a request may carry upstream.
#[derive(Debug)]
pub enum Grant {
    /// Forwarded without an identity (`web`, `public`).
    Anonymous,
    /// An authenticated app password with the route's scopes.
    AppPassword(Arc<Verified>),
}

/// Decides the request's fate on its route.
pub async fn check(
    gw: &Gateway,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    client: IpAddr,
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
        Access::AppPassword => gw
            .auth
            .authenticate(headers, client, route.required)
            .await
            .map(Grant::AppPassword),
    }
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
