//! Who is signed in on the self-service page: the one step between a request
//! and a user name. Everything else on the page (CSRF, forms, the store) only
//! ever sees the [`SignedIn`] this step returns.
//!
//! Header mode believes `user_header` only from a peer in
//! `server.trusted_proxies` (the SSO proxy in front: Authelia, oauth2-proxy,
//! Authentik); from anyone else the header is ignored as if absent. The same
//! header is stripped from every forwarded request (`headers::strip_request`).
//!
//! Adding a way to sign in (OIDC) means one more [`Identity`] variant: its
//! [`Identity::signed_in`] arm (a session cookie → user, or a redirect to the
//! issuer), its own pages under the mount ([`Identity::serve_own`]:
//! `/callback`, `/logout`), a freshness check before creation
//! ([`Identity::step_up`]) and the form it keeps meanwhile
//! ([`Identity::kept_form`]).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, Response};
use http_body_util::Full;

use super::oidc::OidcIdentity;
use super::Peer;
use crate::config::PageIdentity;
use crate::error::PageError;
use crate::gateway::Gateway;
use crate::oidc::{Resume, SignInError};

/// A signed-in user, as the page sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user name (checked: 1–255 printable characters, no colon).
    pub user: String,
    /// What the CSRF token is bound to besides the user: a session id when
    /// there are sessions, empty in header mode (the SSO proxy owns the session).
    pub binding: String,
    /// The page offers a sign-out button (sessions that passgate owns).
    pub can_sign_out: bool,
    /// When the user last authenticated (unix seconds), where passgate
    /// knows it (OIDC); the step-up before creating compares it.
    pub auth_time: Option<u64>,
}

/// The outcome of the identity step.
#[derive(Debug)]
pub enum SignInOutcome {
    SignedIn(SignedIn),
    /// Not signed in and the identity can send the browser to sign in (302).
    Redirect(Response<Full<Bytes>>),
    /// Not signed in, or a bad identity: shown as an error page.
    Refuse(PageError),
}

/// How the page learns who is signed in; built from `[selfservice]`.
#[derive(Debug)]
pub enum Identity {
    /// `identity = "header"`.
    Header { user_header: HeaderName },
    /// `identity = "oidc"` (`selfservice/oidc.rs`); an `Err` if the relying
    /// party could not be built (then every sign-in fails clearly).
    Oidc(Result<Arc<OidcIdentity>, SignInError>),
}

impl Identity {
    pub fn new(config: &PageIdentity, mount: &str) -> Identity {
        match config {
            PageIdentity::Header { user_header } => Identity::Header {
                user_header: user_header.clone(),
            },
            PageIdentity::Oidc(c) => Identity::Oidc(OidcIdentity::shared(c, mount)),
        }
    }

    /// Who sent this request (`sub`: its path below the mount), or what to
    /// answer instead.
    pub async fn signed_in(
        &self,
        gw: &Gateway,
        sub: &str,
        req: &Parts,
        conn: &Peer,
    ) -> SignInOutcome {
        match self {
            Identity::Header { user_header } => header_user(req, conn, user_header),
            Identity::Oidc(Ok(o)) => o.signed_in(gw, sub, req, conn).await,
            Identity::Oidc(Err(e)) => SignInOutcome::Refuse(PageError::SignIn(e.clone())),
        }
    }

    /// Requests under the mount that the identity answers itself (sign-in
    /// callbacks, sign-out), given the path below the mount; `None` for the rest.
    pub async fn serve_own(
        &self,
        gw: &Gateway,
        sub: &str,
        req: &Parts,
        conn: &Peer,
    ) -> Option<Result<Response<Full<Bytes>>, PageError>> {
        if sub != "/callback" {
            return None;
        }
        match self {
            Identity::Header { .. } => None,
            Identity::Oidc(_) if req.method != http::Method::GET => {
                Some(Err(PageError::MethodNotAllowed))
            }
            Identity::Oidc(Ok(o)) => Some(o.callback(gw, req, conn).await),
            Identity::Oidc(Err(e)) => Some(Err(PageError::SignIn(e.clone()))),
        }
    }

    /// Before a password is created or rotated: `Some(page)` when the
    /// sign-in is too old and must be renewed first (step-up), keeping
    /// `resume` to show again after it; `None` to go ahead.
    pub async fn step_up(
        &self,
        gw: &Gateway,
        who: &SignedIn,
        origin: &str,
        client: IpAddr,
        resume: Resume,
    ) -> Option<Result<Response<Full<Bytes>>, PageError>> {
        match self {
            Identity::Header { .. } => None,
            Identity::Oidc(Ok(o)) => o.step_up(gw, who, origin, client, resume).await,
            Identity::Oidc(Err(e)) => Some(Err(PageError::SignIn(e.clone()))),
        }
    }

    /// The form a step-up kept for `who`'s session (OIDC), to show again
    /// at `{mount}/resume`; `None` where there is none.
    pub async fn kept_form(
        &self,
        gw: &Gateway,
        who: &SignedIn,
    ) -> Result<Option<Resume>, PageError> {
        match self {
            Identity::Header { .. } | Identity::Oidc(Err(_)) => Ok(None),
            Identity::Oidc(Ok(o)) => o.kept_form(gw, who).await,
        }
    }

    /// After a password was created or rotated: the form a step-up kept for
    /// `who`'s session is done with.
    /// Best effort: the password exists, its one showing must not fail
    /// because of this (a kept form left behind expires by itself).
    pub async fn forget_form(&self, gw: &Gateway, who: &SignedIn) {
        if let Identity::Oidc(Ok(o)) = self {
            o.forget_form(gw, who).await;
        }
    }

    /// `POST {mount}/logout`, after the origin and CSRF checks: ends the
    /// session where passgate owns one; 404 where it does not.
    pub async fn sign_out(
        &self,
        gw: &Gateway,
        who: &SignedIn,
        req: &Parts,
        conn: &Peer,
    ) -> Result<Response<Full<Bytes>>, PageError> {
        match self {
            Identity::Header { .. } | Identity::Oidc(Err(_)) => Err(PageError::NotFound),
            Identity::Oidc(Ok(o)) => o.sign_out(gw, who, req, conn).await,
        }
    }
}

/// Header mode: one value of `user_header` from a trusted peer.
fn header_user(req: &Parts, conn: &Peer, name: &HeaderName) -> SignInOutcome {
    if !conn.trusted {
        // Anyone can send the header; only the SSO proxy's copy counts.
        return SignInOutcome::Refuse(PageError::SignInRequired);
    }
    let mut values = req.headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return SignInOutcome::Refuse(match req.headers.contains_key(name) {
            true => PageError::BadUser,
            false => PageError::SignInRequired,
        });
    };
    let Ok(user) = std::str::from_utf8(value.as_bytes()) else {
        return SignInOutcome::Refuse(PageError::BadUser);
    };
    if user.is_empty() {
        return SignInOutcome::Refuse(PageError::SignInRequired);
    }
    if !crate::user::is_valid(user) || user.trim() != user {
        return SignInOutcome::Refuse(PageError::BadUser);
    }
    SignInOutcome::SignedIn(SignedIn {
        user: user.to_owned(),
        binding: String::new(),
        can_sign_out: false,
        auth_time: None,
    })
}
