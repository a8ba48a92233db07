//! The self-service app-password page (`[selfservice]`): users list, create,
//! rotate and revoke their own app passwords behind their primary sign-in.
//!
//! Everything under the mount is answered here and never forwarded; `proxy`
//! hands such requests over before route matching. Each request goes, in
//! order: credentials refused (an app password or any Basic credentials:
//! 403) → static assets → the identity's own pages → who is signed in
//! ([`identity`]) → the action (`page.rs`), where a POST first passes the
//! origin check and the CSRF token ([`csrf`]). Every response under the
//! mount, error pages included, carries the headers of [`secure`].
//!
//! Names, scopes, expiry and durability are decided by `manage`, as for the
//! CLI: a password shown here is committed. The page adds only its own
//! rules: who may see and revoke which passwords (and that only its owner
//! rotates one: a rotation creates a password), at most
//! [`CREATES_PER_HOUR`] creations (rotations included) per user per hour,
//! and showing a new password once (after the POST, a redirect to a
//! one-time page). The limits typed into the form (`repo`, `allow_from`,
//! one per line) are read by the CLI's parser, in `manage`.
//!
//! Imports point one way: this file dispatches to `page` (the handlers),
//! which reads forms with `form` and renders with `views`; `views` knows
//! `form`'s `CreateForm` and nothing of the handlers;
//! `form` is pure and knows neither.

pub mod csrf;
mod form;
pub mod identity;
mod oidc;
mod page;
mod views;

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::SelfService;
use crate::error::PageError;
use crate::gateway::Gateway;
use crate::manage::Created;
use crate::oidc::Resume;

use self::csrf::Csrf;
use self::form::Form;
use self::identity::{Identity, SignInOutcome, SignedIn};

/// Creations allowed per user in any hour (counted in the store, so a
/// restart or another gateway on the same store does not reset it).
pub const CREATES_PER_HOUR: usize = 10;
/// A new password waits this long for its one showing.
const SHOW_WITHIN: Duration = Duration::from_secs(600);
/// The largest form the page sends is far smaller.
const MAX_FORM: usize = 16 * 1024;

/// What the page knows about the connection (built by `proxy` from its `Conn`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: IpAddr,
    pub tls: bool,
    /// The peer is one of `server.trusted_proxies`.
    pub trusted: bool,
}

/// State that outlives requests and does not depend on the config, so a
/// reloaded `[selfservice]` keeps it: one per process.
struct State {
    csrf: Csrf,
    /// New passwords not yet shown, by a random one-time key in the URL they
    /// are shown at; removed when shown or after [`SHOW_WITHIN`].
    unshown: DashMap<String, Unshown>,
    /// Held across "count this hour's creations, create": two tabs posting at
    /// once cannot both pass the limit.
    create_lock: tokio::sync::Mutex<()>,
}

static STATE: LazyLock<State> = LazyLock::new(|| State {
    csrf: Csrf::new(),
    unshown: DashMap::new(),
    create_lock: tokio::sync::Mutex::const_new(()),
});

#[derive(Debug)]
struct Unshown {
    user: String,
    created: Created,
    at: Instant,
}

/// The page as configured, with its process-wide state.
struct Page<'a> {
    config: &'a SelfService,
    identity: Identity,
    state: &'static State,
}

/// One request's signed-in context, handed to the handlers in [`page`].
struct Cx<'a> {
    gw: &'a Gateway,
    page: Page<'a>,
    who: SignedIn,
    /// The client address (after trusted proxies), for audit lines.
    client: IpAddr,
    /// `scheme://host` as the browser sees the page.
    origin: String,
}

/// True for the mount and every path under it.
pub fn mounts(config: &SelfService, path: &str) -> bool {
    path.strip_prefix(config.path.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Answers a request under the mount (`path`: the normalised path).
pub async fn serve(
    gw: &Gateway,
    peer: &Peer,
    path: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(config) = gw.config.selfservice.as_ref() else {
        let mut resp = views::error_page("/", &PageError::NotFound);
        secure(resp.headers_mut());
        return resp;
    };
    let page = Page {
        config,
        identity: Identity::new(&config.identity, &config.path),
        state: &STATE,
    };
    let sub = path.get(config.path.len()..).unwrap_or_default().to_owned();
    let mut resp = match page.dispatch(gw, peer, &sub, req).await {
        Ok(resp) => resp,
        Err(e) => views::error_page(&config.path, &e),
    };
    secure(resp.headers_mut());
    resp
}

impl<'a> Page<'a> {
    /// The mount, e.g. `/-/app-passwords`.
    fn mount(&self) -> &'a str {
        &self.config.path
    }

    async fn dispatch(
        self,
        gw: &Gateway,
        conn: &Peer,
        sub: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, PageError> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query();
        if crate::access::presents_app_password(&parts.headers, query)
            || presents_basic(&parts.headers)
        {
            refused_credentials(conn.addr);
            return Err(PageError::Credentials);
        }
        let read = parts.method == Method::GET || parts.method == Method::HEAD;
        if let Some(asset) = views::asset(sub) {
            return if read {
                Ok(asset)
            } else {
                Err(PageError::MethodNotAllowed)
            };
        }
        if let Some(own) = self.identity.serve_own(gw, sub, &parts, conn).await {
            return own;
        }
        let who = match self.identity.signed_in(gw, sub, &parts, conn).await {
            SignInOutcome::SignedIn(who) => who,
            SignInOutcome::Redirect(resp) => return Ok(resp),
            SignInOutcome::Refuse(e) => return Err(e),
        };
        let cx = self.cx(gw, who, &parts, conn)?;
        let post = parts.method == Method::POST;
        match sub {
            "" | "/" if read => page::list(&cx, query).await,
            "/resume" if read => page::resume(&cx).await,
            "/revoke" if read => page::confirm_revoke(&cx, query).await,
            "/revoke-all" if read => page::confirm_revoke_all(&cx, query).await,
            "/rotate" if read => page::confirm_rotate(&cx, query).await,
            "/logout" if post => {
                cx.form(&parts, body).await?;
                cx.page.identity.sign_out(gw, &cx.who, &parts, conn).await
            }
            "/create" | "/revoke" | "/revoke-all" | "/rotate" if post => {
                let form = cx.form(&parts, body).await?;
                match sub {
                    "/create" => page::create(&cx, &form).await,
                    "/revoke" => page::revoke(&cx, &form).await,
                    "/rotate" => page::rotate(&cx, &form).await,
                    _ => page::revoke_all(&cx, &form).await,
                }
            }
            "" | "/" | "/create" | "/revoke" | "/revoke-all" | "/rotate" | "/logout"
            | "/resume" => Err(PageError::MethodNotAllowed),
            _ => match sub.strip_prefix("/new/") {
                // GET only: a HEAD (a link checker, a preview) must not use
                // up the one showing.
                Some(key) if parts.method == Method::GET => page::shown_once(&cx, key),
                Some(_) => Err(PageError::MethodNotAllowed),
                None => Err(PageError::NotFound),
            },
        }
    }

    /// The context of a request by `who`.
    fn cx<'g>(
        self,
        gw: &'g Gateway,
        who: SignedIn,
        parts: &http::request::Parts,
        conn: &Peer,
    ) -> Result<Cx<'g>, PageError>
    where
        'a: 'g,
    {
        Ok(Cx {
            gw,
            page: self,
            who,
            client: crate::headers::client_addr(
                conn.addr,
                &parts.headers,
                &gw.config.server.trusted_proxies,
            ),
            origin: csrf::own_origin(parts, conn.tls, conn.trusted)
                .ok_or(PageError::BadForm("request without a host"))?,
        })
    }

    fn is_admin(&self, user: &str) -> bool {
        self.config.admins.iter().any(|a| a == user)
    }

    /// Keeps a new password for its one showing; returns the key of its URL.
    fn keep_unshown(&self, user: &str, created: Created) -> String {
        let unshown = &self.state.unshown;
        unshown.retain(|_, u| u.at.elapsed() < SHOW_WITHIN);
        let key = {
            let bytes: [u8; 16] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        unshown.insert(
            key.clone(),
            Unshown {
                user: user.to_owned(),
                created,
                at: Instant::now(),
            },
        );
        key
    }

    /// The new password behind `key`, once, and only to the user who made it.
    fn take_unshown(&self, user: &str, key: &str) -> Option<Created> {
        self.state
            .unshown
            .remove_if(key, |_, u| u.user == user && u.at.elapsed() < SHOW_WITHIN)
            .map(|(_, u)| u.created)
    }
}

impl Cx<'_> {
    /// A POST's form, after the origin check and the CSRF token.
    async fn form(&self, parts: &http::request::Parts, body: Incoming) -> Result<Form, PageError> {
        if !csrf::same_origin(&parts.headers, &self.origin) {
            return Err(PageError::CrossOrigin);
        }
        let urlencoded = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !urlencoded {
            return Err(PageError::BadForm(
                "expected a form (application/x-www-form-urlencoded)",
            ));
        }
        let limit = self.gw.config.server.header_read_timeout;
        let bytes = match tokio::time::timeout(limit, Limited::new(body, MAX_FORM).collect()).await
        {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(_)) => return Err(PageError::FormTooLarge),
            Err(_) => return Err(PageError::BadForm("the form did not arrive in time")),
        };
        let form = Form::parse(&bytes);
        if !self.page.state.csrf.check(&self.who, form.one("csrf")?) {
            return Err(PageError::Csrf);
        }
        Ok(form)
    }

    fn csrf(&self) -> String {
        self.page.state.csrf.token(&self.who)
    }

    /// `{mount}{path}` about `owner`'s passwords: with `?user=NAME` when
    /// they are not the signed-in user's own (an admin's view).
    fn owner_url(&self, path: &str, owner: &str) -> String {
        if owner == self.who.user {
            format!("{}{path}", self.mount())
        } else {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("user", owner)
                .finish();
            format!("{}{path}?{q}", self.mount())
        }
    }

    /// Before an action that makes a password: `Some(page)` sending the
    /// user to sign in again when their sign-in is too old, keeping
    /// `resume` (see [`Identity::step_up`]); `None` to go ahead.
    async fn step_up(&self, resume: Resume) -> Option<Result<Response<Full<Bytes>>, PageError>> {
        let (gw, who, origin) = (self.gw, &self.who, &self.origin);
        self.page
            .identity
            .step_up(gw, who, origin, self.client, resume)
            .await
    }

    fn mount(&self) -> &str {
        self.page.mount()
    }
}

/// The headers on every response under the mount: never stored, never
/// framed, no resource but our own, no sniffing, no referrer leaving the page.
pub fn secure(h: &mut HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn refused_credentials(peer: IpAddr) {
    crate::audit::emit(crate::audit::AuditEvent::WebRefused {
        peer,
        route: "selfservice",
    });
}

/// 303 See Other to `location` (after a POST: reloading does not repeat it).
fn see_other(location: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// Any `Authorization: Basic`, or an `Authorization` too long to be checked
/// for an app password: the page is reached only through the primary sign-in.
fn presents_basic(headers: &HeaderMap) -> bool {
    headers.get_all(AUTHORIZATION).iter().any(|v| {
        let v = v.as_bytes().trim_ascii_start();
        v.len() > crate::auth::basic::MAX_HEADER_LEN
            || v.get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"basic "))
            || v.eq_ignore_ascii_case(b"basic")
    })
}
