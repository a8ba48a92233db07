//! The page's HTML (maud: every interpolated value is escaped, no HTML is
//! built by string concatenation) and its two static files, compiled into
//! the binary. Pages work without JavaScript; the script only adds the copy
//! button. Nothing is loaded from anywhere but the mount (CSP `default-src 'self'`).

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{html, Markup, DOCTYPE};

use super::Cx;
use crate::config::PageExpiry;
use crate::error::PageError;
use crate::manage::{Created, Listed};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/copy.js");
/// Standard expiry choices, in days.
const CHOICES: [u64; 4] = [7, 30, 60, 90];
/// Expiry within this many seconds is flagged in the list.
const SOON: u64 = 7 * 86_400;

/// What the create form holds (defaults, or what was sent when re-shown).
#[derive(Debug, Clone, Default)]
pub(super) struct CreateForm {
    pub(super) name: String,
    pub(super) scopes: Vec<String>,
    pub(super) expires: String,
    pub(super) expires_on: String,
    /// `repo` as typed: one `OWNER/NAME` or `OWNER/*` per line.
    pub(super) repos: String,
    /// `allow_from` as typed: one address or CIDR block per line.
    pub(super) allow_from: String,
    /// The field the error is about, marked `aria-invalid` when re-shown.
    pub(super) bad: Option<&'static str>,
}

impl CreateForm {
    pub(super) fn defaults(expiry: PageExpiry) -> CreateForm {
        CreateForm {
            expires: expiry_value(expiry),
            ..CreateForm::default()
        }
    }

    /// The fields as the form sends them (to keep across a step-up).
    pub(super) fn fields(&self) -> Vec<(String, String)> {
        let mut out = vec![("name".to_owned(), self.name.clone())];
        out.extend(self.scopes.iter().map(|s| ("scope".to_owned(), s.clone())));
        out.extend([
            ("expires".to_owned(), self.expires.clone()),
            ("expires_on".to_owned(), self.expires_on.clone()),
            ("repo".to_owned(), self.repos.clone()),
            ("allow_from".to_owned(), self.allow_from.clone()),
        ]);
        out
    }
}

/// The list page's content.
pub(super) struct ListView<'a> {
    pub(super) owner: &'a str,
    pub(super) rows: &'a [Listed],
    /// The create form: only on one's own list.
    pub(super) form: Option<&'a CreateForm>,
    pub(super) error: Option<&'a str>,
    /// The form is the one a step-up interrupted, shown again to confirm.
    pub(super) resumed: bool,
    pub(super) now: u64,
}

pub(super) fn list_page(cx: &Cx<'_>, v: &ListView<'_>) -> Response<Full<Bytes>> {
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
                    p.actions { a.button.danger href=(revoke_all_href(mount, own, v.owner)) { "Revoke all…" } }
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

fn create_form(cx: &Cx<'_>, form: &CreateForm, error: Option<&str>) -> Markup {
    let mount = cx.mount();
    // The field the error is about; the name when the error names none.
    let invalid = |field: &str| {
        let about = form.bad.unwrap_or("name");
        (error.is_some() && about == field).then_some("true")
    };
    let max = cx.gw.config.auth.max_lifetime;
    let mut choices: Vec<(String, String)> = CHOICES
        .iter()
        .filter(|d| max.is_none_or(|m| d.saturating_mul(86_400) <= m.as_secs()))
        .map(|d| (format!("{d}d"), format!("{d} days")))
        .collect();
    if !choices.iter().any(|(v, _)| *v == form.expires)
        && !matches!(form.expires.as_str(), "never" | "date" | "")
        && !super::page::is_date(&form.expires)
    {
        choices.insert(0, (form.expires.clone(), form.expires.clone()));
    }
    if max.is_none() {
        choices.push(("never".into(), "Never".into()));
    }
    choices.push(("date".into(), "On a date…".into()));
    let date_value = if super::page::is_date(&form.expires) {
        form.expires.clone()
    } else {
        form.expires_on.clone()
    };
    let selected = if super::page::is_date(&form.expires) {
        "date"
    } else {
        form.expires.as_str()
    };
    html! {
        section aria-labelledby="create-title" {
            h2 id="create-title" { "Create an app password" }
            form.create method="post" action=(format!("{mount}/create")) {
                input type="hidden" name="csrf" value=(cx.csrf());
                div.field {
                    label for="name" { "Name" }
                    input type="text" id="name" name="name" value=(form.name) required maxlength="100"
                        autocomplete="off" spellcheck="false" aria-describedby="name-hint"
                        aria-invalid=[invalid("name")];
                    p.hint id="name-hint" { "What will use it, e.g. “laptop git” or “CI deploy job”." }
                }
                fieldset.field {
                    legend { "Scopes" }
                    p.hint { "Give it only what the application needs." }
                    ul.scopes {
                        @for (i, (name, description, implied)) in cx.gw.config.scopes.catalogue().enumerate() {
                            li {
                                input type="checkbox" id=(format!("scope-{i}")) name="scope" value=(name)
                                    checked[form.scopes.iter().any(|s| s == name)];
                                label for=(format!("scope-{i}")) {
                                    code { (name) }
                                    @if let Some(d) = description { span.desc { " — " (d) } }
                                    @if !implied.is_empty() { span.implies { " (also grants " (implied.join(", ")) ")" } }
                                }
                            }
                        }
                    }
                }
                div.field {
                    label for="expires" { "Expires" }
                    div.inline {
                        select id="expires" name="expires" {
                            @for (value, label) in &choices {
                                option value=(value) selected[*value == selected] { (label) }
                            }
                        }
                        label.visually-hidden for="expires_on" { "Expiry date" }
                        input type="date" id="expires_on" name="expires_on" value=(date_value) aria-describedby="expires-hint";
                    }
                    p.hint id="expires-hint" {
                        "With “On a date…”, the password works through the end of that day (UTC)."
                        @if let Some(m) = max { " Passwords here expire within " (span_of(m)) "." }
                    }
                }
                div.field {
                    label for="repo" { "Repositories " span.muted { "(optional)" } }
                    textarea id="repo" name="repo" rows="3" autocomplete="off" spellcheck="false"
                        aria-describedby="repo-hint" aria-invalid=[invalid("repo")] { (form.repos) }
                    p.hint id="repo-hint" {
                        "One " code { "OWNER/NAME" } " or " code { "OWNER/*" } " per line: the password works only for those repositories. Empty: no limit."
                    }
                }
                div.field {
                    label for="allow_from" { "Allowed networks " span.muted { "(optional)" } }
                    textarea id="allow_from" name="allow_from" rows="2" autocomplete="off" spellcheck="false"
                        aria-describedby="allow-from-hint" aria-invalid=[invalid("allow_from")] { (form.allow_from) }
                    p.hint id="allow-from-hint" {
                        "One address or CIDR block (such as " code { "192.0.2.0/24" } ") per line: the password works only from there. Empty: from anywhere."
                    }
                }
                button.primary type="submit" { "Create app password" }
            }
        }
    }
}

pub(super) fn created_page(cx: &Cx<'_>, c: &Created) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let (scheme, host) = cx.origin.split_once("://").unwrap_or(("https", &cx.origin));
    let clone = format!(
        "git clone {scheme}://{}@{host}/OWNER/REPO.git",
        userinfo(&c.user)
    );
    let body = html! {
        h1 { "Your new app password" }
        p.notice role="status" { strong { "Copy it now." } " It is shown this once: passgate keeps only a hash and cannot show it again." }
        @if let Some(old) = &c.rotated_from {
            p id="rotated-from" { "It replaces app password " code { (old) } ", which stops working at once or when the grace you chose ends. Put the new one where the old one was used." }
        }
        div.secret {
            code id="new-password" { (c.password) }
            button type="button" id="copy" hidden { "Copy" }
        }
        dl.details {
            dt { "Name" } dd { (c.name) }
            dt { "User name" } dd { code { (c.user) } }
            dt { "Scopes" } dd { @for s in &c.scopes { span.scope { (s) } " " } }
            dt { "Expires" } dd { @match &c.expires_at { Some(e) => (when(e)), None => "never" } }
            dt { "Limits" } dd { (limits(&c.repos, &c.allow_from)) }
            dt { "ID" } dd { code { (c.id) } }
        }
        h2 { "How to use it" }
        p { "Sign in with your user name " code { (c.user) } " and this password as the password. For example:" }
        pre { code { (clone) } }
        p.hint { "Git asks for the password; a credential helper (" code { "git config --global credential.helper store" } " or your system's keychain) remembers it." }
        p { a.button href=(mount) { "Back to your app passwords" } }
        script src=(format!("{mount}/static/copy.js")) {}
    };
    let mut resp = respond(StatusCode::OK, layout(cx, "Your new app password", body));
    *resp.status_mut() = StatusCode::OK;
    resp
}

pub(super) fn confirm_revoke_page(cx: &Cx<'_>, r: &Listed) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let back = back_href(cx, &r.user);
    let body = html! {
        h1 { "Revoke “" (r.name) "”?" }
        @if r.status == "active" {
            p { "Anything using app password " code { (r.id) } " (scopes: " (r.scopes.join(", ")) ") stops working at once. This cannot be undone." }
            form.confirm method="post" action=(format!("{mount}/revoke")) {
                input type="hidden" name="csrf" value=(cx.csrf());
                input type="hidden" name="id" value=(r.id);
                button.danger type="submit" id="confirm-revoke" { "Revoke app password" }
                " "
                a.button href=(back) { "Cancel" }
            }
        } @else {
            p { "This app password is already " (r.status) "." }
            p { a.button href=(back) { "Back" } }
        }
    };
    respond(StatusCode::OK, layout(cx, "Revoke app password", body))
}

/// The rotation's confirmation, `grace` preselected; `resumed` after the
/// step-up that interrupted it.
pub(super) fn confirm_rotate_page(
    cx: &Cx<'_>,
    r: &Listed,
    grace: &str,
    resumed: bool,
) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let back = back_href(cx, &r.user);
    let graces = [("0", "at once"), ("1h", "in 1 hour"), ("1d", "in 1 day")];
    let grace = if graces.iter().any(|(v, _)| *v == grace) {
        grace
    } else {
        "0"
    };
    let body = html! {
        h1 { "Rotate “" (r.name) "”?" }
        @if resumed {
            p.notice role="status" id="resumed" {
                strong { "You signed in again." }
                " Nothing was rotated yet: confirm the rotation below."
            }
        }
        @if r.status == "active" && r.rotated_to.is_none() {
            p { "A new app password with the same name, scopes and limits replaces " code { (r.id) } ". It is shown once, like a new one. The old one stops working at the time you choose." }
            form.confirm method="post" action=(format!("{mount}/rotate")) {
                input type="hidden" name="csrf" value=(cx.csrf());
                input type="hidden" name="id" value=(r.id);
                div.field {
                    label for="grace" { "The old password stops" }
                    select id="grace" name="grace" {
                        @for (value, label) in graces {
                            option value=(value) selected[value == grace] { (label) }
                        }
                    }
                }
                button.primary type="submit" id="confirm-rotate" { "Rotate app password" }
                " "
                a.button href=(back) { "Cancel" }
            }
        } @else if r.rotated_to.is_some() {
            p { "This app password was already rotated." }
            p { a.button href=(back) { "Back" } }
        } @else {
            p { "This app password is " (r.status) ": only an active one can be rotated." }
            p { a.button href=(back) { "Back" } }
        }
    };
    respond(StatusCode::OK, layout(cx, "Rotate app password", body))
}

pub(super) fn confirm_revoke_all_page(
    cx: &Cx<'_>,
    owner: &str,
    active: usize,
) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let back = back_href(cx, owner);
    let own = owner == cx.who.user;
    let body = html! {
        h1 { "Revoke all app passwords" @if !own { " of " (owner) } "?" }
        @if active == 0 {
            p { "There is no active app password to revoke." }
            p { a.button href=(back) { "Back" } }
        } @else {
            p { "All " (active) " active app passwords stop working at once. This cannot be undone." }
            form.confirm method="post" action=(format!("{mount}/revoke-all")) {
                input type="hidden" name="csrf" value=(cx.csrf());
                @if !own { input type="hidden" name="user" value=(owner); }
                button.danger type="submit" id="confirm-revoke-all" { "Revoke all " (active) }
                " "
                a.button href=(back) { "Cancel" }
            }
        }
    };
    respond(StatusCode::OK, layout(cx, "Revoke all app passwords", body))
}

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

fn revoke_all_href(mount: &str, own: bool, owner: &str) -> String {
    if own {
        format!("{mount}/revoke-all")
    } else {
        format!("{mount}/revoke-all?{}", user_query(owner))
    }
}

fn back_href(cx: &Cx<'_>, owner: &str) -> String {
    if owner == cx.who.user {
        cx.mount().to_owned()
    } else {
        format!("{}?{}", cx.mount(), user_query(owner))
    }
}

fn user_query(user: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("user", user)
        .finish()
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

/// The form value for an expiry: `30d`-style when a whole number of days.
fn expiry_value(e: PageExpiry) -> String {
    match e {
        PageExpiry::Never => "never".to_owned(),
        PageExpiry::After(d) if d.as_secs() % 86_400 == 0 => format!("{}d", d.as_secs() / 86_400),
        PageExpiry::After(d) => humantime::format_duration(d).to_string(),
    }
}

/// `2026-12-04T19:55:53Z` → `2026-12-04 19:55 UTC`.
fn when(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => rfc3339.to_owned(),
    }
}

fn unix_of(rfc3339: &str) -> Option<u64> {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .map(crate::manage::unix)
}

/// `90 days`, or humantime's form when not a whole number of days.
fn span_of(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    }
}

fn left(secs: u64) -> String {
    match secs {
        0 => "now".to_owned(),
        s if s < 86_400 => format!("in {} h", s.div_ceil(3600)),
        s => format!("in {} days", s.div_ceil(86_400)),
    }
}

/// A user name as URL user information (RFC 3986 §3.2.1), for the example.
fn userinfo(user: &str) -> String {
    user.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
