//! The create form (its expiry choices bounded by `auth.max_lifetime`,
//! the scope catalogue, the optional limits) and the page that shows a new
//! password, created or rotated, the one time it is shown.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::{html, Markup};

use super::{layout, limits, respond, when};
use crate::manage::Created;
use crate::selfservice::form::{is_date, CreateForm};
use crate::selfservice::Cx;

/// Standard expiry choices, in days.
const CHOICES: [u64; 4] = [7, 30, 60, 90];

pub(super) fn create_form(cx: &Cx<'_>, form: &CreateForm, error: Option<&str>) -> Markup {
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
        && !is_date(&form.expires)
    {
        choices.insert(0, (form.expires.clone(), form.expires.clone()));
    }
    if max.is_none() {
        choices.push(("never".into(), "Never".into()));
    }
    choices.push(("date".into(), "On a date…".into()));
    let date_value = if is_date(&form.expires) {
        form.expires.clone()
    } else {
        form.expires_on.clone()
    };
    let selected = if is_date(&form.expires) {
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

pub(in crate::selfservice) fn created_page(cx: &Cx<'_>, c: &Created) -> Response<Full<Bytes>> {
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

/// `90 days`, or humantime's form when not a whole number of days.
fn span_of(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
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
