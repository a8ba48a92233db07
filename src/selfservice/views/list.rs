//! The list page: a user's app passwords, one row each with its scopes,
//! limits, expiry, last use and status, the buttons that lead to rotating
//! or revoking, and on one's own list the create form ([`super::create`]).
//! Admins also get the box that opens another user's list.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{html, Markup};

use super::create::create_form;
use super::{layout, limits, respond, when};
use crate::manage::Listed;
use crate::selfservice::form::CreateForm;
use crate::selfservice::Cx;

/// Expiry within this many seconds is flagged in the list.
const SOON: u64 = 7 * 86_400;

/// The list page's content.
pub(in crate::selfservice) struct ListView<'a> {
    pub(in crate::selfservice) owner: &'a str,
    pub(in crate::selfservice) rows: &'a [Listed],
    /// The create form: only on one's own list.
    pub(in crate::selfservice) form: Option<&'a CreateForm>,
    pub(in crate::selfservice) error: Option<&'a str>,
    /// The form is the one a step-up interrupted, shown again to confirm.
    pub(in crate::selfservice) resumed: bool,
    pub(in crate::selfservice) now: u64,
}

pub(in crate::selfservice) fn list_page(cx: &Cx<'_>, v: &ListView<'_>) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let own = v.owner == cx.who.user;
    let admin = cx.page.is_admin(&cx.who.user);
    let active = v.rows.iter().filter(|r| r.status == "active").count();
    let title = if own {
        "App passwords".to_owned()
    } else {
        format!("App passwords of {}", v.owner)
    };
    let body = html! {
        h1 { (title) }
        @if own {
            p.lead {
                "App passwords let Git clients, IDEs and scripts sign in as you with only the permissions you choose. "
                "Each one is shown once; revoke it here when you no longer need it."
            }
        } @else {
            p.notice { "You are viewing another user's app passwords as an administrator. "
                a href=(mount) { "Back to your own" } }
        }
        @if v.resumed {
            p.notice role="status" id="resumed" {
                strong { "You signed in again." }
                " Nothing was created yet: check the form below, then create the app password."
            }
        }
        @if let (Some(msg), Some(_)) = (v.error, v.form) {
            div.error role="alert" id="form-error" { strong { "Not created: " } (msg) }
        }
        section aria-labelledby="list-title" {
            h2 id="list-title" { @if own { "Your app passwords" } @else { "Their app passwords" } }
            @if v.rows.is_empty() {
                p.empty { "No app passwords yet." }
            } @else {
                div.table-wrap {
                    table id="passwords" {
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "ID" } th scope="col" { "Scopes" }
                            th scope="col" { "Limits" }
                            th scope="col" { "Created" } th scope="col" { "Expires" }
                            th scope="col" { "Last used" } th scope="col" { "Status" }
                            th scope="col" { span.visually-hidden { "Actions" } }
                        } }
                        tbody {
                            @for r in v.rows { (row(mount, r, v.now, own)) }
                        }
                    }
                }
                @if active > 0 {
                    p.actions { a.button.danger href=(cx.owner_url("/revoke-all", v.owner)) { "Revoke all…" } }
                }
            }
        }
        @if let Some(form) = v.form {
            (create_form(cx, form, v.error))
        }
        @if admin {
            section.admin aria-labelledby="admin-title" {
                h2 id="admin-title" { "Administration" }
                form method="get" action=(mount) {
                    label for="view-user" { "View a user's app passwords" }
                    div.inline {
                        input type="text" id="view-user" name="user" required autocomplete="off" spellcheck="false";
                        button type="submit" { "View" }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, layout(cx, &title, body))
}

fn row(mount: &str, r: &Listed, now: u64, own: bool) -> Markup {
    let expires = r.expires_at.as_deref().and_then(unix_of);
    let soon = r.status == "active" && expires.is_some_and(|e| e.saturating_sub(now) <= SOON);
    html! {
        tr id=(format!("pw-{}", r.id)) {
            td.name { (r.name) }
            td { code { (r.id) } }
            td { @for s in &r.scopes { span.scope { (s) } " " } }
            td.limits-cell { (limits(&r.repos, &r.allow_from)) }
            td { (when(&r.created_at)) }
            td.soon[soon] {
                @match &r.expires_at {
                    Some(e) => {
                        (when(e))
                        @if soon { br; span.flag { "expires " (left(expires.unwrap_or(now).saturating_sub(now))) } }
                    },
                    None => "never",
                }
            }
            td {
                @if r.last_used.is_empty() {
                    @match &r.last_used_at {
                        Some(t) => {
                            (when(t))
                            @if let Some(a) = &r.last_used_addr { br; span.addr { "from " (a) } }
                        },
                        None => "never",
                    }
                } @else {
                    ul.limits.last-used {
                        @for u in &r.last_used {
                            li { (when(&u.at)) " " span.addr { "from " (u.addr) } }
                        }
                    }
                }
            }
            td {
                span class=(format!("status status-{}", r.status)) { (r.status) }
                @if let Some(to) = &r.rotated_to {
                    br;
                    span.addr {
                        "replaced by " code { (to) }
                        @if r.status == "active" {
                            @if let Some(at) = &r.revoked_at { "; stops " (when(at)) }
                        }
                    }
                }
            }
            td {
                @if r.status == "active" {
                    @if own && r.rotated_to.is_none() {
                        a.button.small href=(format!("{mount}/rotate?id={}", r.id)) aria-label=(format!("Rotate {}", r.name)) { "Rotate…" }
                        " "
                    }
                    a.button.small.danger href=(format!("{mount}/revoke?id={}", r.id)) aria-label=(format!("Revoke {}", r.name)) { "Revoke…" }
                }
            }
        }
    }
}

fn unix_of(rfc3339: &str) -> Option<u64> {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .map(crate::manage::unix)
}

fn left(secs: u64) -> String {
    match secs {
        0 => "now".to_owned(),
        s if s < 86_400 => format!("in {} h", s.div_ceil(3600)),
        s => format!("in {} days", s.div_ceil(86_400)),
    }
}
