//! [`Reject`]: every reason the gateway answers a request itself, and the one
//! place where such a reason becomes an HTTP status, headers and body.
//!
//! Bodies are short plain text meant for the person behind the client (git
//! prints them). Internal causes (store errors, upstream I/O errors) are logged
//! where they happen and never sent: the body only says what the client can act on.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::path::PathError;
use crate::routes::query::QueryError;

/// Why the gateway refuses a request, each with its status and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// 400: the path is ambiguous; it is refused rather than guessed at.
    #[error("{0}")]
    BadPath(PathError),
    /// 414: longer than any path we are willing to interpret.
    #[error("request path too long")]
    PathTooLong,
    /// 400: absolute-form target naming another host, or a target form we do not proxy.
    #[error("{0}")]
    BadTarget(&'static str),
    /// 400: a query key a route depends on is repeated or malformed.
    #[error("{0}")]
    BadQuery(QueryError),
    /// 400: a malformed request we cannot classify safely (duplicate Authorization, bad body).
    #[error("{0}")]
    BadRequest(&'static str),
    /// 400: the path ends in `/` and is routed differently without it; the
    /// backend may read it either way, so neither reading is authorised.
    #[error("path ends in '/' and is routed differently without it")]
    TrailingSlash,
    /// 404: no `[[routes]]` entry matches.
    #[error("no route for this request")]
    NoRoute,
    /// 403: a `deny` route; nobody reaches it through the gateway.
    #[error("access to this path is denied")]
    Denied,
    /// 401: no credentials, or credentials that are not a valid app password of
    /// that user. Unknown id, wrong user, wrong secret, revoked and expired all
    /// look the same so an attacker learns nothing.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403, not 401: the password is valid but lacks a scope. git erases a stored
    /// credential after a 401, so a read-only password used for a push must not
    /// cost the user their saved password.
    #[error("this app password lacks the scope \"{missing}\" required here")]
    MissingScope { missing: String, accepted: String },
    /// 403, not 401 (git keeps the credential): a valid password used from a
    /// client address outside its `--allow-from` networks.
    #[error("this app password cannot be used from {addr}")]
    AddressNotAllowed { addr: std::net::IpAddr },
    /// 403, not 401: a valid password limited to some repositories, on a
    /// route whose resource is another one or which names none.
    #[error("{}", repo_message(resource.as_deref(), allowed))]
    RepoNotAllowed {
        /// The route's resource; `None` when the route names none.
        resource: Option<String>,
        /// The password's `--repo` list, comma-separated.
        allowed: String,
    },
    /// 403: an app password presented on a `web` route.
    #[error("app passwords cannot be used to sign in to the web interface")]
    WebAppPassword,
    /// 413: a body the gateway must read (LFS batch) is larger than it will read.
    #[error("request body too large")]
    BodyTooLarge,
    /// 429: too many failed attempts from this address (or for this user there).
    #[error("too many failed authentication attempts; retry later")]
    RateLimited { retry_after: Duration },
    /// 503: every password-verification worker is busy; retry shortly.
    #[error("authentication is busy; retry shortly")]
    Overloaded { retry_after: Duration },
    /// 503: the app-password store failed (logged where it happened).
    #[error("authentication store unavailable")]
    StoreUnavailable,
    /// 503: an HTTP/2 request over `max_connections(_per_addr)`, where each
    /// request in flight counts as a connection (it holds an upstream one).
    #[error("too many requests in flight from this address; retry shortly")]
    TooManyInFlight,
    /// 502: the upstream refused the connection, reset it or sent garbage.
    #[error("bad gateway: upstream unavailable")]
    UpstreamUnavailable,
    /// 408: the request body stopped arriving for `response_timeout`.
    #[error("request timeout: the request body stopped arriving")]
    RequestTimeout,
    /// 504: the upstream did not answer within `response_timeout`.
    #[error("gateway timeout: upstream did not answer in time")]
    UpstreamTimeout,
}

/// Seconds a client is asked to wait when the store cannot be read (a
/// database that went away usually needs a few seconds to come back).
const STORE_RETRY_AFTER: u64 = 5;

impl Reject {
    /// The status for each rejection; exhaustive on purpose.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadPath(_)
            | Reject::BadTarget(_)
            | Reject::BadQuery(_)
            | Reject::BadRequest(_)
            | Reject::TrailingSlash => StatusCode::BAD_REQUEST,
            Reject::PathTooLong => StatusCode::URI_TOO_LONG,
            Reject::NoRoute => StatusCode::NOT_FOUND,
            Reject::Denied
            | Reject::MissingScope { .. }
            | Reject::AddressNotAllowed { .. }
            | Reject::RepoNotAllowed { .. }
            | Reject::WebAppPassword => StatusCode::FORBIDDEN,
            Reject::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Reject::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Reject::Overloaded { .. } | Reject::StoreUnavailable | Reject::TooManyInFlight => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reject::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reject::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Reject::BadPath(_) => "bad-path",
            Reject::PathTooLong => "path-too-long",
            Reject::BadTarget(_) => "bad-target",
            Reject::BadQuery(_) => "bad-query",
            Reject::BadRequest(_) => "bad-request",
            Reject::TrailingSlash => "trailing-slash",
            Reject::NoRoute => "no-route",
            Reject::Denied => "denied",
            Reject::Unauthorized(_) => "unauthorized",
            Reject::MissingScope { .. } => "missing-scope",
            Reject::AddressNotAllowed { .. } => "address-not-allowed",
            Reject::RepoNotAllowed { .. } => "repository-not-allowed",
            Reject::WebAppPassword => "web-app-password",
            Reject::BodyTooLarge => "body-too-large",
            Reject::RateLimited { .. } => "rate-limited",
            Reject::Overloaded { .. } => "overloaded",
            Reject::StoreUnavailable => "store-unavailable",
            Reject::TooManyInFlight => "too-many-in-flight",
            Reject::UpstreamUnavailable => "upstream-unavailable",
            Reject::UpstreamTimeout => "upstream-timeout",
            Reject::RequestTimeout => "request-timeout",
        }
    }

    /// The full response: status, the headers a client needs to act, a text body.
    pub fn into_response(self, realm: &HeaderValue) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut resp = Response::new(Full::new(Bytes::from(format!("{self}\n"))));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match &self {
            Reject::Unauthorized(_) => {
                headers.insert(WWW_AUTHENTICATE, realm.clone());
            }
            Reject::MissingScope { accepted, .. } => {
                if let Ok(v) = HeaderValue::from_str(accepted) {
                    headers.insert("x-accepted-scopes", v);
                }
            }
            Reject::RateLimited { retry_after } | Reject::Overloaded { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Reject::TooManyInFlight => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1u64));
            }
            Reject::StoreUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER));
            }
            _ => {}
        }
        resp
    }
}

/// Why the self-service page refuses a request; rendered as an HTML page
/// by `selfservice`, with the status decided here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// 401 (header mode): no trusted user header.
    #[error("you are not signed in: open this page through your organisation's sign-in")]
    SignInRequired,
    /// 401 (OIDC): nobody is signed in, and this request does not start a
    /// sign-in (a POST, a HEAD, a subresource): opening the page does.
    #[error("you are not signed in: open the app-password page to sign in")]
    NotSignedIn,
    /// 400: the signed-in user name is not a clean user name.
    #[error("the signed-in user name is not a valid user name")]
    BadUser,
    /// 403: an app password or Basic credentials on the page: it is reached
    /// only through the primary sign-in.
    #[error("app passwords and Basic credentials cannot be used on this page")]
    Credentials,
    /// 403: a POST whose `csrf` field is missing or not this user's.
    #[error("this form has expired or was not sent from this page; reload the page and try again")]
    Csrf,
    /// 403: a POST whose `Origin` (else `Referer`) is not the page's own origin.
    #[error("this form was not sent from this page")]
    CrossOrigin,
    /// 403: another user's list without being an admin.
    #[error("only administrators may see other users' app passwords")]
    NotAdmin,
    /// 404: no such page, or an app password that is not the user's.
    #[error("not found")]
    NotFound,
    /// 405: a method the page does not answer.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 410: the page that showed a new password once, asked for again.
    #[error("this password was shown once and cannot be shown again; if you did not copy it, revoke it and create a new one")]
    ShownOnce,
    /// 400: a malformed form (not urlencoded, repeated or missing fields).
    #[error("{0}")]
    BadForm(&'static str),
    /// 413: a form larger than any the page sends.
    #[error("form too large")]
    FormTooLarge,
    /// 409: a rotation refused (the password is no longer active, was
    /// rotated before, or its lifetime is no longer allowed).
    #[error("this app password cannot be rotated: {0}")]
    NotRotatable(String),
    /// A sign-in at the OIDC issuer failed (status by cause, below).
    #[error("sign-in failed: {0}")]
    SignIn(crate::oidc::SignInError),
    /// 429: this client address started its share of sign-ins (each one is
    /// a pre-login record in the store); `Retry-After` seconds.
    #[error(
        "too many sign-ins were started from your address; try again in {retry_after} seconds"
    )]
    TooManySignIns { retry_after: u64 },
    /// 429: this signed-in user started their share of step-ups (sign-ins
    /// again before creating or rotating); `Retry-After` seconds.
    #[error("you were sent to sign in again too many times in a short while; try again in {retry_after} seconds")]
    TooManyStepUps { retry_after: u64 },
    /// 503: as many sign-ins are in progress as the gateway keeps at once;
    /// `Retry-After` seconds.
    #[error("too many sign-ins are in progress right now; try again in {retry_after} seconds")]
    SignInsBusy { retry_after: u64 },
    /// 503: the store failed (logged where it happened).
    #[error("the app-password store is unavailable; try again shortly")]
    Unavailable,
}

impl PageError {
    /// The status for each refusal; exhaustive on purpose.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::SignInRequired | PageError::NotSignedIn => StatusCode::UNAUTHORIZED,
            PageError::BadUser | PageError::BadForm(_) => StatusCode::BAD_REQUEST,
            PageError::Credentials
            | PageError::Csrf
            | PageError::CrossOrigin
            | PageError::NotAdmin => StatusCode::FORBIDDEN,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PageError::ShownOnce => StatusCode::GONE,
            PageError::FormTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::NotRotatable(_) => StatusCode::CONFLICT,
            PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PageError::SignIn(e) => sign_in_status(e),
            PageError::TooManySignIns { .. } | PageError::TooManyStepUps { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PageError::SignInsBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds for `Retry-After`, for the refusals that end by themselves.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            PageError::TooManySignIns { retry_after }
            | PageError::TooManyStepUps { retry_after }
            | PageError::SignInsBusy { retry_after } => Some((*retry_after).max(1)),
            _ => None,
        }
    }
}

/// The status of a failed OIDC sign-in: the browser's own doing (no sign-in
/// in progress, a foreign `state`, a used code) is 400; the user not signed in
/// (cancelled, token refused) 401; signed in but not allowed 403; the issuer
/// failing 502.
#[deny(clippy::wildcard_enum_match_arm)]
fn sign_in_status(e: &crate::oidc::SignInError) -> StatusCode {
    use crate::oidc::SignInError as E;
    match e {
        E::NoPending | E::BadState | E::NoCode | E::CodeRefused(_) => StatusCode::BAD_REQUEST,
        E::Provider(_) | E::InvalidIdToken(_) | E::NotFresh => StatusCode::UNAUTHORIZED,
        E::NoUsername(_) | E::BadUsername | E::NotInGroup(_) => StatusCode::FORBIDDEN,
        E::IssuerUnreachable(_) | E::TokenEndpoint(_) | E::NoIdToken => StatusCode::BAD_GATEWAY,
    }
}

impl From<PathError> for Reject {
    fn from(e: PathError) -> Self {
        match e {
            PathError::TooLong => Reject::PathTooLong,
            other => Reject::BadPath(other),
        }
    }
}

fn repo_message(resource: Option<&str>, allowed: &str) -> String {
    match resource {
        Some(r) => format!(
            "this app password is limited to the repositories {allowed}; it cannot be used for {r}"
        ),
        None => format!(
            "this app password is limited to the repositories {allowed}; this path names no repository"
        ),
    }
}

/// `Basic realm="…", charset="UTF-8"` for the configured realm (validated at load).
pub fn challenge(realm: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"passgate\", charset=\"UTF-8\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_maps_to_its_status() {
        let d = Duration::from_millis(1500);
        let table: Vec<(Reject, u16)> = vec![
            (Reject::BadPath(PathError::DotSegment), 400),
            (Reject::PathTooLong, 414),
            (Reject::BadTarget("x"), 400),
            (
                Reject::BadQuery(QueryError::Repeated {
                    key: "service".into(),
                }),
                400,
            ),
            (Reject::BadRequest("x"), 400),
            (Reject::TrailingSlash, 400),
            (Reject::NoRoute, 404),
            (Reject::Denied, 403),
            (Reject::Unauthorized("x"), 401),
            (
                Reject::AddressNotAllowed {
                    addr: "192.0.2.1".parse().unwrap(),
                },
                403,
            ),
            (
                Reject::RepoNotAllowed {
                    resource: Some("alice/b".into()),
                    allowed: "alice/a".into(),
                },
                403,
            ),
            (
                Reject::MissingScope {
                    missing: "a".into(),
                    accepted: "a".into(),
                },
                403,
            ),
            (Reject::WebAppPassword, 403),
            (Reject::BodyTooLarge, 413),
            (Reject::RateLimited { retry_after: d }, 429),
            (Reject::Overloaded { retry_after: d }, 503),
            (Reject::StoreUnavailable, 503),
            (Reject::TooManyInFlight, 503),
            (Reject::UpstreamUnavailable, 502),
            (Reject::UpstreamTimeout, 504),
            (Reject::RequestTimeout, 408),
        ];
        for (reject, status) in table {
            assert_eq!(reject.status().as_u16(), status, "{reject:?}");
        }
    }

    #[test]
    fn every_page_error_maps_to_its_status() {
        let table = [
            (PageError::SignInRequired, 401),
            (PageError::NotSignedIn, 401),
            (PageError::BadUser, 400),
            (PageError::Credentials, 403),
            (PageError::Csrf, 403),
            (PageError::CrossOrigin, 403),
            (PageError::NotAdmin, 403),
            (PageError::NotFound, 404),
            (PageError::MethodNotAllowed, 405),
            (PageError::ShownOnce, 410),
            (PageError::BadForm("x"), 400),
            (PageError::FormTooLarge, 413),
            (PageError::Unavailable, 503),
            (PageError::TooManySignIns { retry_after: 5 }, 429),
            (PageError::TooManyStepUps { retry_after: 5 }, 429),
            (PageError::SignInsBusy { retry_after: 5 }, 503),
        ];
        for (e, status) in table {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn unauthorized_carries_the_challenge() {
        let realm = challenge("passgate");
        let resp = Reject::Unauthorized("missing credentials").into_response(&realm);
        assert_eq!(
            resp.headers()[WWW_AUTHENTICATE],
            "Basic realm=\"passgate\", charset=\"UTF-8\""
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let realm = challenge("r");
        let resp = Reject::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response(&realm);
        assert_eq!(resp.headers()[RETRY_AFTER], "2");
        let resp = Reject::Overloaded {
            retry_after: Duration::ZERO,
        }
        .into_response(&realm);
        assert_eq!(resp.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn missing_scope_names_it() {
        let realm = challenge("r");
        let r = Reject::MissingScope {
            missing: "repository:write".into(),
            accepted: "repository:write".into(),
        };
        let resp = r.into_response(&realm);
        assert_eq!(resp.headers()["x-accepted-scopes"], "repository:write");
    }
}
