//! The page's HTML (maud: every interpolated value is escaped, no HTML is
//! built by string concatenation) and its two static files, compiled into
//! the binary. Pages work without JavaScript; the script only adds the copy
//! button. Nothing is loaded from anywhere but the mount (CSP `default-src 'self'`).
//!
//! This file holds what every page shares: the layout around a signed-in
//! page, the error page, the static files, and the small formatters (times,
//! limits). One file per page or form below it: [`list`] (the list and its
//! rows), [`create`] (the create form and the page that shows a new
//! password once), [`confirm`] (the confirmations before revoking or
//! rotating). Views only render what they are given: no store, no `manage`.

mod confirm;
mod create;
mod list;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{html, Markup, DOCTYPE};

use super::Cx;
use crate::error::PageError;

pub(super) use self::confirm::{confirm_revoke_all_page, confirm_revoke_page, confirm_rotate_page};
pub(super) use self::create::created_page;
pub(super) use self::list::{list_page, ListView};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/copy.js");

/// An error page: the status of `e` and its message.
pub(super) fn error_page(mount: &str, e: &PageError) -> Response<Full<Bytes>> {
    let status = e.status();
    let title = status.canonical_reason().unwrap_or("Error");
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(mount, title)) }
            body {
                header.top { span.brand { "passgate" } }
                main {
                    h1 { (title) }
                    p id="error" { (e.to_string()) }
                    @if matches!(e, PageError::SignIn(_)) {
                        // Nothing of the failed sign-in is kept: a new one
                        // starts from the page itself.
                        p { a.button id="start-again" href=(mount) { "Sign in again" } }
                    } @else if *e == PageError::NotSignedIn {
                        p { a.button id="sign-in" href=(mount) { "Sign in" } }
                    } @else if !matches!(e, PageError::SignInRequired | PageError::Credentials) {
                        p { a.button href=(mount) { "Back to your app passwords" } }
                    }
                }
            }
        }
    };
    let mut resp = respond(status, markup);
    if *e == PageError::MethodNotAllowed {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
    }
    if let Some(secs) = e.retry_after() {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `/static/style.css` and `/static/copy.js` under the mount.
pub(super) fn asset(sub: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match sub {
        "/static/style.css" => (STYLE, "text/css; charset=utf-8"),
        "/static/copy.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    Some(resp)
}

fn layout(cx: &Cx<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(cx.mount(), title)) }
            body {
                header.top {
                    a.brand href=(cx.mount()) { "passgate" }
                    span.who { "Signed in as " strong id="signed-in-user" { (cx.who.user) } }
                    @if cx.who.can_sign_out {
                        form.signout method="post" action=(format!("{}/logout", cx.mount())) {
                            input type="hidden" name="csrf" value=(cx.csrf());
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn head(mount: &str, title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="robots" content="noindex";
        title { (title) " — passgate" }
        link rel="stylesheet" href=(format!("{mount}/static/style.css"));
    }
}

fn respond(status: StatusCode, markup: Markup) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(markup.into_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// A password's limits: its repositories and networks, or "none".
fn limits(repos: &[String], allow_from: &[String]) -> Markup {
    html! {
        @if repos.is_empty() && allow_from.is_empty() {
            span.muted { "none" }
        } @else {
            ul.limits {
                @for r in repos { li.repo { code { (r) } } }
                @for n in allow_from { li.net { "from " code { (n) } } }
            }
        }
    }
}

/// `2026-12-04T19:55:53Z` → `2026-12-04 19:55 UTC`.
fn when(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => rfc3339.to_owned(),
    }
}
