//! `identity = "oidc"`: the page's sign-in through an OpenID Connect issuer.
//!
//! The protocol and every check on the ID token live in `crate::oidc`; this
//! file ties them to the browser and the store:
//!
//! - **Not signed in**: a top-level GET of the page itself goes to the
//!   issuer (302) after a pre-login record (state, nonce, PKCE verifier) is
//!   stored under a random cookie. That is a store write any anonymous
//!   visitor causes, so it is bounded ([`SignInLimits`]): per client address
//!   (429), in all on this gateway (503), and expired records are swept when
//!   sign-ins start. A step-up (below) is bounded per signed-in user instead. Nothing else writes one: another GET under the mount is
//!   sent to the page (302), a HEAD, a prefetch or a subresource load (an
//!   `<img>` on another site, by its `Sec-Fetch-Dest`) gets the 401 page
//!   with a link to the page, a POST too (nothing is replayed after a
//!   sign-in).
//! - **`{mount}/callback`**: the pre-login record is taken (used once), the
//!   code exchanged, the ID token verified; a new session (random 256-bit id,
//!   stored for `session_ttl`) is created and its cookie set. The browser is
//!   then sent on by a small page, not a redirect: the cookie is
//!   `SameSite=Strict` and a redirect chain that began on the issuer's site
//!   would not carry it.
//! - **Step-up**: creating or rotating a password with a sign-in older than
//!   `reauth_after` answers a page that goes on to the issuer with `max_age`
//!   (a page, not a redirect: CSP `form-action 'self'` forbids redirecting
//!   the form's POST to another origin). The form the user filled in (it
//!   passed the origin and CSRF checks) goes into the pre-login record
//!   ([`Resume`]); the callback checks `auth_time` and, when the same user
//!   came back, keeps the form under the new session and sends the browser
//!   to `{mount}/resume`, which shows it again, filled in, under the new
//!   session's CSRF token, as often as it is reloaded, until it is
//!   submitted: nothing is done until then.
//! - **`POST {mount}/logout`** (CSRF-checked by the page): deletes the session.
//!
//! Every failure is a [`PageError::SignIn`] (status in `error.rs`) and an
//! audit line; none creates a session.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{html, DOCTYPE};

mod limits;

use self::limits::{navigation, Refused, SignInLimits};
use super::identity::{SignInOutcome, SignedIn};
use super::Peer;
use crate::audit::{self, AuditEvent};
use crate::clock::unix_now;
use crate::error::PageError;
use crate::gateway::Gateway;
use crate::metrics::SignInLimit;
use crate::oidc::session::{self, Session};
use crate::oidc::{Oidc, OidcConfig, Pending, Resume, SignInError};

/// Expired sessions and pre-login records are purged at most this often
/// (seconds).
const PURGE_EVERY: u64 = 60;
/// The OIDC identity of one page.
#[derive(Debug)]
pub struct OidcIdentity {
    rp: Oidc,
    config: OidcConfig,
    mount: String,
    last_purge: AtomicU64,
    limits: SignInLimits,
}

/// The relying party outlives requests (its discovery and key set cache);
/// a reload with another `[selfservice.oidc]` or mount builds a new one.
static CURRENT: Mutex<Option<Arc<OidcIdentity>>> = Mutex::new(None);

impl OidcIdentity {
    /// The process's identity for this config, built on first use.
    pub fn shared(config: &OidcConfig, mount: &str) -> Result<Arc<OidcIdentity>, SignInError> {
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current.as_ref() {
            if c.config == *config && c.mount == mount {
                return Ok(c.clone());
            }
        }
        let made = Arc::new(OidcIdentity {
            rp: Oidc::new(config)?,
            config: config.clone(),
            mount: mount.to_owned(),
            last_purge: AtomicU64::new(0),
            limits: SignInLimits::new(config),
        });
        *current = Some(made.clone());
        Ok(made)
    }

    /// The session named by the request's cookie, or a sign-in to start
    /// (`sub`: the path below the mount).
    pub async fn signed_in(
        &self,
        gw: &Gateway,
        sub: &str,
        req: &Parts,
        conn: &Peer,
    ) -> SignInOutcome {
        let Some(origin) = super::csrf::own_origin(req, conn.tls, conn.trusted) else {
            return SignInOutcome::Refuse(PageError::BadForm("request without a host"));
        };
        let tls = origin.starts_with("https://");
        let (cookie, _) = session::cookie_names(tls);
        if let Some(id) = session::read_cookie(&req.headers, cookie) {
            match self.session(gw, id).await {
                Ok(Some(s)) => {
                    return SignInOutcome::SignedIn(SignedIn {
                        user: s.user,
                        binding: session::session_key(id),
                        can_sign_out: true,
                        auth_time: Some(s.auth_time),
                    })
                }
                Ok(None) => {}
                Err(e) => return SignInOutcome::Refuse(e),
            }
        }
        // Only a browser opening the page itself starts a sign-in (a
        // pre-login record in the store); see the module doc.
        if req.method != http::Method::GET || !navigation(&req.headers) {
            return SignInOutcome::Refuse(PageError::NotSignedIn);
        }
        if !matches!(sub, "" | "/") {
            return SignInOutcome::Redirect(found(&self.mount));
        }
        let client =
            crate::headers::client_addr(conn.addr, &req.headers, &gw.config.server.trusted_proxies);
        let started = self.start(gw, client, &origin, None, None).await;
        match started {
            Ok(resp) => SignInOutcome::Redirect(resp),
            Err(e) => SignInOutcome::Refuse(e),
        }
    }

    /// `Some(page)` going on to the issuer with `max_age` when the sign-in
    /// of `who` is older than `reauth_after`; `resume` (the action and the
    /// form that needed it) is kept for the callback to hand back.
    pub async fn step_up(
        &self,
        gw: &Gateway,
        who: &SignedIn,
        origin: &str,
        client: IpAddr,
        resume: Resume,
    ) -> Option<Result<Response<Full<Bytes>>, PageError>> {
        let reauth = self.rp.config().reauth_after;
        let auth_time = who.auth_time.unwrap_or(0);
        if auth_time + reauth.as_secs() >= unix_now() {
            return None;
        }
        let (heading, why) = match resume.action.as_str() {
            super::form::ROTATE => (
                "Sign in again to rotate an app password",
                "Your last sign-in is too old for rotating a password. Nothing was rotated: sign in again, then confirm the rotation.",
            ),
            _ => (
                "Sign in again to create an app password",
                "Your last sign-in is too old for creating a password. Nothing was created: sign in again, then check your form, which is kept, and create the password.",
            ),
        };
        let renews = Some((who.user.clone(), resume));
        let started = self.start(gw, client, origin, Some(reauth), renews).await;
        Some(started.map(|mut resp| {
            // Not a redirect: the form's POST may not be redirected to
            // another origin (CSP form-action 'self'); a link may be followed.
            let to = resp.headers_mut().remove(LOCATION);
            let to = to.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
            let body = html! {
                h1 id="step-up" { (heading) }
                p { (why) }
                p { a id="sign-in-again" href=(to) { "Sign in again" } }
            };
            let mut page = going_on(to, "Sign in again — passgate", body);
            for cookie in resp.headers().get_all(SET_COOKIE) {
                page.headers_mut().append(SET_COOKIE, cookie.clone());
            }
            page
        }))
    }

    /// `GET {mount}/callback`: the issuer's answer.
    pub async fn callback(
        &self,
        gw: &Gateway,
        req: &Parts,
        conn: &Peer,
    ) -> Result<Response<Full<Bytes>>, PageError> {
        let origin = super::csrf::own_origin(req, conn.tls, conn.trusted)
            .ok_or(PageError::BadForm("request without a host"))?;
        let tls = origin.starts_with("https://");
        let (_, login_cookie) = session::cookie_names(tls);
        let result = self.finish(gw, req, login_cookie).await;
        let client =
            crate::headers::client_addr(conn.addr, &req.headers, &gw.config.server.trusted_proxies);
        let (who, pending) = result.map_err(|e| self.failed(e, client))?;
        let id = session::new_id();
        let now = unix_now();
        let ttl = self.rp.config().session_ttl.as_secs();
        let record = Session {
            user: who.user.clone(),
            auth_time: who.auth_time,
            created: now,
        };
        let key = session::session_key(&id);
        let bytes = session::encode_session(&record);
        blocking(gw, move |s| s.put_session(&key, &bytes, now + ttl)).await?;
        // A step-up created a new session: the old one ends here.
        if let Some(old) = session::read_cookie(&req.headers, session::cookie_names(tls).0) {
            let key = session::session_key(old);
            blocking(gw, move |s| s.delete_session(&key).map(|_| ())).await?;
        }
        self.purge(gw, now).await;
        audit::emit(AuditEvent::SignedIn {
            peer: client,
            user: &who.user,
            method: "oidc",
            step_up: pending.max_age.is_some(),
        });
        let cookies = vec![
            session::session_cookie(tls, &id, ttl),
            session::login_cookie(tls, "", 0),
        ];
        // A step-up's form goes back only to the user who filled it in, kept
        // under the new session: `{mount}/resume` shows it, reload after
        // reload, rather than this callback, which works once.
        let same_user = pending.renews.as_deref() == Some(who.user.as_str());
        let mut resp = match pending.resume.filter(|_| same_user) {
            Some(resume) => {
                let kept = session::resume_key(&session::session_key(&id));
                let bytes = session::encode_resume(&resume);
                let ttl = self.config.sign_in_timeout.as_secs();
                let put = blocking(gw, move |s| s.put_session(&kept, &bytes, now + ttl));
                match put.await {
                    Ok(()) => resume_page(&self.mount),
                    // Signed in all the same (the session is stored): on
                    // to the page, without the form (the failure is logged).
                    Err(_) => continue_page(&self.mount),
                }
            }
            None => continue_page(&self.mount),
        };
        for cookie in cookies {
            resp.headers_mut().append(SET_COOKIE, cookie);
        }
        Ok(resp)
    }

    /// The form a step-up kept for `who`'s session, if any (it stays until
    /// it is submitted or `sign_in_timeout` after the step-up).
    pub async fn kept_form(
        &self,
        gw: &Gateway,
        who: &SignedIn,
    ) -> Result<Option<Resume>, PageError> {
        let key = session::resume_key(&who.binding);
        let now = unix_now();
        let bytes = blocking(gw, move |s| s.session(&key, now)).await?;
        Ok(bytes.as_deref().and_then(session::decode_resume))
    }

    /// Drops the form a step-up kept for `who`'s session: it was submitted.
    /// A store failure is logged (by [`blocking`]) and otherwise ignored.
    pub async fn forget_form(&self, gw: &Gateway, who: &SignedIn) {
        let key = session::resume_key(&who.binding);
        let _ = blocking(gw, move |s| s.delete_session(&key).map(|_| ())).await;
    }

    /// `POST {mount}/logout`, after the page checked origin and CSRF.
    pub async fn sign_out(
        &self,
        gw: &Gateway,
        who: &SignedIn,
        req: &Parts,
        conn: &Peer,
    ) -> Result<Response<Full<Bytes>>, PageError> {
        let origin = super::csrf::own_origin(req, conn.tls, conn.trusted)
            .ok_or(PageError::BadForm("request without a host"))?;
        let tls = origin.starts_with("https://");
        if let Some(id) = session::read_cookie(&req.headers, session::cookie_names(tls).0) {
            let key = session::session_key(id);
            blocking(gw, move |s| s.delete_session(&key).map(|_| ())).await?;
        }
        audit::emit(AuditEvent::SignedOut {
            peer: crate::headers::client_addr(
                conn.addr,
                &req.headers,
                &gw.config.server.trusted_proxies,
            ),
            user: &who.user,
            method: "oidc",
        });
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Signed out — passgate" }
                    link rel="stylesheet" href=(format!("{}/static/style.css", self.mount));
                }
                body {
                    header.top { span.brand { "passgate" } }
                    main {
                        h1 id="signed-out" { "Signed out" }
                        p { "You are signed out of the app-password page. Your app passwords keep working." }
                        p { a.button href=(self.mount) { "Sign in again" } }
                    }
                }
            }
        };
        let mut resp = html_response(StatusCode::OK, markup.into_string());
        resp.headers_mut()
            .append(SET_COOKIE, session::session_cookie(tls, "", 0));
        Ok(resp)
    }

    /// Starts a sign-in from `client`: within [`SignInLimits`], stores the
    /// pre-login record (with the user it renews and the form to resume, for
    /// a step-up) and answers 302 to the issuer with its cookie.
    async fn start(
        &self,
        gw: &Gateway,
        client: IpAddr,
        origin: &str,
        max_age: Option<Duration>,
        renews: Option<(String, Resume)>,
    ) -> Result<Response<Full<Bytes>>, PageError> {
        let now = unix_now();
        let ttl = self.config.sign_in_timeout.as_secs();
        let admitted = match &renews {
            Some((user, _)) => self.limits.admit_step_up(user),
            None => self.limits.admit(client, now + ttl),
        };
        if let Err(refused) = admitted {
            return Err(limited(refused, client));
        }
        self.purge(gw, now).await;
        let redirect_uri = format!("{origin}{}/callback", self.mount);
        let begun = self.rp.begin(&redirect_uri, max_age, &self.mount).await;
        let (url, mut pending) = begun.map_err(|e| self.failed(e, client))?;
        if let Some((user, resume)) = renews {
            pending.renews = Some(user);
            pending.resume = Some(resume);
        }
        let id = session::new_id();
        let key = session::login_key(&id);
        let bytes = session::encode_pending(&pending);
        blocking(gw, move |s| s.put_session(&key, &bytes, now + ttl)).await?;
        let mut resp = found(&url);
        let tls = origin.starts_with("https://");
        resp.headers_mut()
            .append(SET_COOKIE, session::login_cookie(tls, &id, ttl));
        Ok(resp)
    }

    async fn finish(
        &self,
        gw: &Gateway,
        req: &Parts,
        login_cookie: &str,
    ) -> Result<(crate::oidc::SignIn, Pending), SignInError> {
        let query = req.uri.query().unwrap_or_default();
        let mut state = None;
        let mut code = None;
        let mut error = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "state" => &mut state,
                "code" => &mut code,
                "error" => &mut error,
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(SignInError::BadState);
            }
        }
        // Whatever the answer, this browser's pre-login record is used up.
        let id = session::read_cookie(&req.headers, login_cookie).ok_or(SignInError::NoPending)?;
        let key = session::login_key(id);
        let now = unix_now();
        let taken = blocking(gw, move |s| s.take_session(&key, now))
            .await
            .map_err(|_| SignInError::IssuerUnreachable("the store is unavailable".into()))?;
        let pending = taken
            .as_deref()
            .and_then(session::decode_pending)
            .ok_or(SignInError::NoPending)?;
        if let Some(error) = error {
            return Err(SignInError::Provider(error.chars().take(64).collect()));
        }
        let who = self
            .rp
            .finish(
                &pending,
                state.as_deref().unwrap_or_default(),
                code.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok((who, pending))
    }

    async fn session(&self, gw: &Gateway, id: &str) -> Result<Option<Session>, PageError> {
        let key = session::session_key(id);
        let now = unix_now();
        let bytes = blocking(gw, move |s| s.session(&key, now)).await?;
        Ok(bytes.as_deref().and_then(session::decode_session))
    }

    async fn purge(&self, gw: &Gateway, now: u64) {
        let last = self.last_purge.load(Ordering::Relaxed);
        if now < last + PURGE_EVERY
            || self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let _ = blocking(gw, move |s| s.purge_sessions(now).map(|_| ())).await;
    }

    /// Logs a failed sign-in and turns it into the page's error. Anyone can
    /// cause these (a junk callback), so they share the per-address audit
    /// budget of failed authentications.
    fn failed(&self, e: SignInError, client: IpAddr) -> PageError {
        crate::audit::emit(crate::audit::AuditEvent::SignInFailed {
            peer: client,
            method: "oidc",
            error: &e.to_string(),
        });
        PageError::SignIn(e)
    }
}

/// A sign-in [`SignInLimits`] refused to start from `client`: counted,
/// audited, and the page's 429 or 503.
fn limited(refused: Refused, client: IpAddr) -> PageError {
    let (limit, wait) = match refused {
        Refused::PerAddress(wait) => (SignInLimit::PerAddress, wait),
        Refused::InProgress(wait) => (SignInLimit::InProgress, wait),
        Refused::PerUser(wait) => (SignInLimit::PerUser, wait),
    };
    crate::metrics::record_sign_in_refused(limit);
    audit::emit(AuditEvent::SignInLimited {
        peer: client,
        limit: match limit {
            SignInLimit::PerAddress => "per-address",
            SignInLimit::InProgress => "in-progress",
            SignInLimit::PerUser => "per-user",
        },
        retry_after: wait,
    });
    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match refused {
        Refused::PerAddress(_) => PageError::TooManySignIns { retry_after },
        Refused::InProgress(_) => PageError::SignInsBusy { retry_after },
        Refused::PerUser(_) => PageError::TooManyStepUps { retry_after },
    }
}

/// Runs a store call off the reactor; a failure is the page's 503.
async fn blocking<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, PageError> {
    let store = gw.store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "session store failed");
            Err(PageError::Unavailable)
        }
        Err(_) => Err(PageError::Unavailable),
    }
}

/// The page after a successful sign-in: on to the page (`mount`).
fn continue_page(mount: &str) -> Response<Full<Bytes>> {
    let body = html! {
        h1 { "Signed in" }
        p { a id="continue" href=(mount) { "Continue to your app passwords" } }
    };
    going_on(mount, "Signed in — passgate", body)
}

/// The page after a step-up's sign-in: on to the kept form
/// (`{mount}/resume`).
fn resume_page(mount: &str) -> Response<Full<Bytes>> {
    let to = format!("{mount}/resume");
    let body = html! {
        h1 { "Signed in again" }
        p { a id="continue" href=(to) { "Back to your form" } }
    };
    going_on(&to, "Signed in again — passgate", body)
}

/// A page that goes on to `to` at once (a refresh, and `body`'s link for
/// browsers that do not follow it): a navigation this page starts, where a
/// redirect could not be used (see the module doc).
fn going_on(to: &str, title: &str, body: maud::Markup) -> Response<Full<Bytes>> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0;url={to}"));
                title { (title) }
            }
            body { main { (body) } }
        }
    };
    html_response(StatusCode::OK, markup.into_string())
}

/// 302 Found to `location`.
fn found(location: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn html_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
