//! The page's handlers, one per action, each one step per line: whose
//! passwords, may this user touch them, call `manage`, audit, render.
//! No GET changes a password; every POST has passed the origin check and
//! the CSRF token before it gets here (`Cx::form`).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::views::{self, CreateForm, ListView};
use super::{see_other, Cx, Form, CREATES_PER_HOUR};
use crate::audit::{self, AuditEvent};
use crate::clock::unix_now;
use crate::config::PageExpiry;
use crate::error::PageError;
use crate::limits::LimitError;
use crate::manage::{self, CreateRequest, Listed, ManageError, RotateRequest};
use crate::oidc::Resume;
use crate::store::AppPassword;

type Page = Result<Response<Full<Bytes>>, PageError>;

/// The actions a step-up can interrupt, as [`Resume::action`] names them.
pub(super) const CREATE: &str = "create";
pub(super) const ROTATE: &str = "rotate";

/// `GET {mount}[?user=NAME]`: the list and, for one's own list, the create form.
pub(super) async fn list(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let owner = viewed_user(cx, query)?;
    let form = CreateForm::defaults(cx.page.config.default_expiry);
    render_list(cx, &owner, form, None, StatusCode::OK).await
}

/// After a step-up: the interrupted action's form again, filled in as the
/// user left it, under their new session's CSRF token. Changes nothing.
pub(super) async fn resume(cx: &Cx<'_>, r: &Resume) -> Page {
    let field = |name: &str| {
        r.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if r.action == ROTATE {
        let record = own_record(cx, &field("id")).await?;
        let row = manage::list_row(&record);
        return Ok(views::confirm_rotate_page(cx, &row, &field("grace"), true));
    }
    let form = CreateForm {
        name: field("name"),
        scopes: r
            .fields
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect(),
        expires: field("expires"),
        expires_on: field("expires_on"),
        repos: field("repo"),
        allow_from: field("allow_from"),
        bad: None,
    };
    let me = cx.who.user.clone();
    render_list_resumed(cx, &me, form).await
}

/// `POST {mount}/create`: creates, keeps it for one showing, 303 to that page.
pub(super) async fn create(cx: &Cx<'_>, form: &Form) -> Page {
    let mut filled = CreateForm {
        name: form.one("name")?.unwrap_or_default().trim().to_owned(),
        scopes: form.all("scope").map(str::to_owned).collect(),
        expires: form.one("expires")?.unwrap_or_default().to_owned(),
        expires_on: form.one("expires_on")?.unwrap_or_default().to_owned(),
        repos: form.one("repo")?.unwrap_or_default().to_owned(),
        allow_from: form.one("allow_from")?.unwrap_or_default().to_owned(),
        bad: None,
    };
    let resume = Resume {
        action: CREATE.to_owned(),
        fields: filled.fields(),
    };
    let (gw, who, origin) = (cx.gw, &cx.who, &cx.origin);
    let step_up = cx.page.identity.step_up(gw, who, origin, cx.client, resume);
    if let Some(page) = step_up.await {
        return page;
    }
    let me = cx.who.user.clone();
    let expires_in = match expiry_seconds(&filled.expires, &filled.expires_on) {
        Ok(e) => e,
        Err(msg) => {
            filled.bad = Some("expires");
            return render_list(cx, &me, filled, Some(msg), StatusCode::BAD_REQUEST).await;
        }
    };
    let req = CreateRequest {
        user: me.clone(),
        name: filled.name.clone(),
        scopes: filled.scopes.clone(),
        expires_in,
        repos: lines(&filled.repos),
        allow_from: lines(&filled.allow_from),
    };
    // One creation at a time: the count and the insert must not interleave.
    let guard = cx.page.state.create_lock.lock().await;
    let recent = created_this_hour(cx, &me).await?;
    if recent >= CREATES_PER_HOUR {
        drop(guard);
        let msg = format!(
            "you have created {recent} app passwords in the last hour; wait a while before creating another"
        );
        return render_list(cx, &me, filled, Some(msg), StatusCode::TOO_MANY_REQUESTS).await;
    }
    let gw = cx.gw;
    let store = gw.store.clone();
    let config = gw.config.clone();
    let out = tokio::task::spawn_blocking(move || manage::create(&store, &config, &req)).await;
    drop(guard);
    let created = match out {
        Ok(Ok(created)) => created,
        Ok(Err(e)) => {
            let status = match &e {
                ManageError::DuplicateName { .. } => StatusCode::CONFLICT,
                e if e.is_usage() => StatusCode::BAD_REQUEST,
                _ => return Err(unavailable(&e)),
            };
            filled.bad = bad_field(&e);
            return render_list(cx, &me, filled, Some(form_message(&e)), status).await;
        }
        Err(e) => return Err(unavailable(&ManageError::Task(e))),
    };
    audit::emit(AuditEvent::PageCreated {
        peer: cx.client,
        id: &created.id,
        user: &created.user,
        name: &created.name,
        scopes: &created.scopes.join(" "),
    });
    let key = cx.page.keep_unshown(&me, created);
    Ok(see_other(&format!("{}/new/{key}", cx.mount())))
}

/// `GET {mount}/rotate?id=ID`: the confirmation step (changes nothing).
pub(super) async fn confirm_rotate(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let id = query_param(query, "id").ok_or(PageError::NotFound)?;
    let record = own_record(cx, &id).await?;
    Ok(views::confirm_rotate_page(
        cx,
        &manage::list_row(&record),
        "0",
        false,
    ))
}

/// `POST {mount}/rotate` (`id`, `grace`): a successor with the same name,
/// scopes and limits, shown once like a created password; the old one
/// stops at once or after the grace. Counts as a creation.
pub(super) async fn rotate(cx: &Cx<'_>, form: &Form) -> Page {
    let id = form.one("id")?.ok_or(PageError::NotFound)?.to_owned();
    let chosen = form.one("grace")?.unwrap_or("0");
    let grace = match chosen {
        "0" => 0,
        "1h" => 3600,
        "1d" => 86_400,
        _ => return Err(PageError::BadForm("grace: choose at once, 1 hour or 1 day")),
    };
    own_record(cx, &id).await?;
    let resume = Resume {
        action: ROTATE.to_owned(),
        fields: vec![("id".into(), id.clone()), ("grace".into(), chosen.into())],
    };
    let (gw, who, origin) = (cx.gw, &cx.who, &cx.origin);
    let step_up = cx.page.identity.step_up(gw, who, origin, cx.client, resume);
    if let Some(page) = step_up.await {
        return page;
    }
    let me = cx.who.user.clone();
    let guard = cx.page.state.create_lock.lock().await;
    let recent = created_this_hour(cx, &me).await?;
    if recent >= CREATES_PER_HOUR {
        drop(guard);
        let msg = format!(
            "you have created {recent} app passwords in the last hour; wait a while before rotating one"
        );
        let form = CreateForm::defaults(cx.page.config.default_expiry);
        return render_list(cx, &me, form, Some(msg), StatusCode::TOO_MANY_REQUESTS).await;
    }
    let (store, config) = (cx.gw.store.clone(), cx.gw.config.clone());
    let old = id.clone();
    let req = RotateRequest {
        expires_in: None,
        grace: Some(grace),
    };
    // As for a revocation: no verification running now may cache the old one.
    cx.gw.auth.revoking(&id);
    let out =
        tokio::task::spawn_blocking(move || manage::rotate(&store, &config, &old, &req)).await;
    cx.gw.auth.revoked(&id);
    drop(guard);
    let created = match out {
        Ok(Ok(created)) => created,
        Ok(Err(e)) if e.is_usage() || matches!(e, ManageError::DuplicateName { .. }) => {
            return Err(PageError::NotRotatable(e.to_string()))
        }
        Ok(Err(ManageError::NotFound(_))) => return Err(PageError::NotFound),
        Ok(Err(e)) => return Err(unavailable(&e)),
        Err(e) => return Err(unavailable(&ManageError::Task(e))),
    };
    audit::emit(AuditEvent::PageRotated {
        peer: cx.client,
        id: &id,
        successor: &created.id,
        user: &created.user,
        name: &created.name,
    });
    let key = cx.page.keep_unshown(&me, created);
    Ok(see_other(&format!("{}/new/{key}", cx.mount())))
}

/// `GET {mount}/new/{key}`: the new password, shown once.
pub(super) fn shown_once(cx: &Cx<'_>, key: &str) -> Page {
    let created = cx
        .page
        .take_unshown(&cx.who.user, key)
        .ok_or(PageError::ShownOnce)?;
    Ok(views::created_page(cx, &created))
}

/// `GET {mount}/revoke?id=ID`: the confirmation step (changes nothing).
pub(super) async fn confirm_revoke(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let id = query_param(query, "id").ok_or(PageError::NotFound)?;
    let record = owned_record(cx, &id).await?;
    let row = manage::list_row(&record);
    Ok(views::confirm_revoke_page(cx, &row))
}

/// `POST {mount}/revoke` (`id`): revokes, 303 back to the list it came from.
pub(super) async fn revoke(cx: &Cx<'_>, form: &Form) -> Page {
    let id = form.one("id")?.ok_or(PageError::NotFound)?.to_owned();
    let record = owned_record(cx, &id).await?;
    let store = cx.gw.store.clone();
    let rid = id.clone();
    // Before the commit: no verification running now may cache it (#21).
    cx.gw.auth.revoking(&id);
    let out = tokio::task::spawn_blocking(move || manage::revoke(&store, &rid)).await;
    let r = match out {
        Ok(Ok(r)) => r,
        Ok(Err(ManageError::NotFound(_) | ManageError::BadId(_))) => {
            return Err(PageError::NotFound)
        }
        Ok(Err(e)) => return Err(unavailable(&e)),
        Err(e) => return Err(unavailable(&ManageError::Task(e))),
    };
    cx.gw.auth.revoked(&r.id);
    if r.revoked_now {
        audit::emit(AuditEvent::PageRevoked {
            peer: cx.client,
            id: &r.id,
            user: &record.user,
            by: &cx.who.user,
        });
    }
    Ok(see_other(&list_url(cx, &record.user)))
}

/// `GET {mount}/revoke-all[?user=NAME]`: the confirmation step.
pub(super) async fn confirm_revoke_all(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let owner = viewed_user(cx, query)?;
    let rows = listed(cx, &owner).await?;
    let active = rows.iter().filter(|r| r.status == "active").count();
    Ok(views::confirm_revoke_all_page(cx, &owner, active))
}

/// `POST {mount}/revoke-all` (`user` for admins): revokes every active one.
pub(super) async fn revoke_all(cx: &Cx<'_>, form: &Form) -> Page {
    let owner = match form.one("user")? {
        Some(u) if u != cx.who.user => {
            if !cx.page.is_admin(&cx.who.user) {
                return Err(PageError::NotAdmin);
            }
            u.to_owned()
        }
        _ => cx.who.user.clone(),
    };
    let store = cx.gw.store.clone();
    let user = owner.clone();
    let ids = match tokio::task::spawn_blocking(move || manage::revoke_user(&store, &user)).await {
        Ok(Ok(ids)) => ids,
        Ok(Err(ManageError::BadUser)) => return Err(PageError::NotFound),
        Ok(Err(e)) => return Err(unavailable(&e)),
        Err(e) => return Err(unavailable(&ManageError::Task(e))),
    };
    for id in &ids {
        cx.gw.auth.revoked(id);
        audit::emit(AuditEvent::PageRevoked {
            peer: cx.client,
            id,
            user: &owner,
            by: &cx.who.user,
        });
    }
    Ok(see_other(&list_url(cx, &owner)))
}

/// The list page, with the create form as `form` (and `error`) for one's own list.
async fn render_list(
    cx: &Cx<'_>,
    owner: &str,
    form: CreateForm,
    error: Option<String>,
    status: StatusCode,
) -> Page {
    let rows = listed(cx, owner).await?;
    let view = ListView {
        owner,
        rows: &rows,
        form: (owner == cx.who.user).then_some(&form),
        error: error.as_deref(),
        resumed: false,
        now: unix_now(),
    };
    let mut resp = views::list_page(cx, &view);
    *resp.status_mut() = status;
    Ok(resp)
}

/// One's own list with the create form as it was before a step-up.
async fn render_list_resumed(cx: &Cx<'_>, owner: &str, form: CreateForm) -> Page {
    let rows = listed(cx, owner).await?;
    let view = ListView {
        owner,
        rows: &rows,
        form: Some(&form),
        error: None,
        resumed: true,
        now: unix_now(),
    };
    Ok(views::list_page(cx, &view))
}

/// Whose list a GET shows: one's own, or (admins only) `?user=NAME`'s.
fn viewed_user(cx: &Cx<'_>, query: Option<&str>) -> Result<String, PageError> {
    match query_param(query, "user") {
        Some(u) if u != cx.who.user => {
            if !cx.page.is_admin(&cx.who.user) {
                return Err(PageError::NotAdmin);
            }
            manage::validate_user(&u).map_err(|_| PageError::NotFound)?;
            Ok(u)
        }
        _ => Ok(cx.who.user.clone()),
    }
}

/// The record behind `id` if the signed-in user may act on it; another
/// user's (unless an admin) is as absent as an unknown id: 404.
async fn owned_record(cx: &Cx<'_>, id: &str) -> Result<AppPassword, PageError> {
    if !crate::auth::token::is_valid_id(id) {
        return Err(PageError::NotFound);
    }
    let store = cx.gw.store.clone();
    let key = id.to_owned();
    let record = match tokio::task::spawn_blocking(move || store.get(&key)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unavailable(&ManageError::from(e))),
        Err(e) => return Err(unavailable(&ManageError::Task(e))),
    };
    match record {
        Some(r) if r.user == cx.who.user || cx.page.is_admin(&cx.who.user) => Ok(r),
        _ => Err(PageError::NotFound),
    }
}

/// The record behind `id` if it is the signed-in user's own: a rotation
/// creates a password, which nobody does for someone else, admins included.
async fn own_record(cx: &Cx<'_>, id: &str) -> Result<AppPassword, PageError> {
    let record = owned_record(cx, id).await?;
    if record.user != cx.who.user {
        return Err(PageError::NotFound);
    }
    Ok(record)
}

async fn listed(cx: &Cx<'_>, owner: &str) -> Result<Vec<Listed>, PageError> {
    let store = cx.gw.store.clone();
    let user = owner.to_owned();
    match tokio::task::spawn_blocking(move || manage::list(&store, Some(&user), None)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(unavailable(&e)),
        Err(e) => Err(unavailable(&ManageError::Task(e))),
    }
}

/// How many passwords `user` created in the last hour, revoked ones included.
async fn created_this_hour(cx: &Cx<'_>, user: &str) -> Result<usize, PageError> {
    let store = cx.gw.store.clone();
    let user = user.to_owned();
    let since = unix_now().saturating_sub(3600);
    match tokio::task::spawn_blocking(move || store.list(Some(&user))).await {
        Ok(Ok(records)) => Ok(records.iter().filter(|r| r.created_at > since).count()),
        Ok(Err(e)) => Err(unavailable(&ManageError::from(e))),
        Err(e) => Err(unavailable(&ManageError::Task(e))),
    }
}

/// The form's `expires` (`7d`…, `never`, `YYYY-MM-DD`, or `date` with
/// `expires_on`) as seconds from now; `None` = never.
fn expiry_seconds(expires: &str, expires_on: &str) -> Result<Option<u64>, String> {
    let expires = expires.trim();
    let date = match expires {
        "never" => return Ok(None),
        "date" => expires_on.trim(),
        d if is_date(d) => d,
        "" => return Err("choose when the password expires".to_owned()),
        d => {
            return match PageExpiry::parse(d) {
                Some(PageExpiry::After(dur)) => Ok(Some(dur.as_secs())),
                Some(PageExpiry::Never) => Ok(None),
                None => Err(format!("\"{d}\" is not an expiry choice")),
            }
        }
    };
    if !is_date(date) {
        return Err("give the expiry date as YYYY-MM-DD".to_owned());
    }
    let midnight = humantime::parse_rfc3339(&format!("{date}T00:00:00Z"))
        .map_err(|_| format!("\"{date}\" is not a date"))?;
    // The password works through the whole of that day (UTC).
    let end = manage::unix(midnight) + 86_400;
    let now = unix_now();
    if end <= now {
        return Err("the expiry date must be in the future".to_owned());
    }
    Ok(Some(end - now))
}

pub(super) fn is_date(s: &str) -> bool {
    s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// A textarea's entries: one per line, blank lines skipped.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The form field a creation error is about, if one.
fn bad_field(e: &ManageError) -> Option<&'static str> {
    match e {
        ManageError::BadName | ManageError::DuplicateName { .. } => Some("name"),
        ManageError::NoScopes { .. } | ManageError::Scope(_) => Some("scope"),
        ManageError::TooLong { .. } | ManageError::ExpiryRequired { .. } => Some("expires"),
        ManageError::Limit(LimitError::BadRepo(_) | LimitError::GitSuffix(..)) => Some("repo"),
        ManageError::Limit(LimitError::BadCidr(_)) => Some("allow_from"),
        _ => None,
    }
}

/// A creation error as the form shows it (the CLI's flag names removed,
/// the form's field named instead).
fn form_message(e: &ManageError) -> String {
    match e {
        ManageError::Limit(LimitError::BadRepo(v)) => format!(
            "Repositories (repo): {v:?} is not OWNER/NAME or OWNER/* (one per line)"
        ),
        ManageError::Limit(LimitError::GitSuffix(v, stem)) => {
            format!("Repositories (repo): give {v:?} without \".git\", as {stem}")
        }
        ManageError::Limit(LimitError::BadCidr(v)) => format!(
            "Allowed networks (allow_from): {v:?} is not an address or a CIDR block such as 192.0.2.0/24 (one per line)"
        ),
        ManageError::NoScopes { .. } => "choose at least one scope".to_owned(),
        ManageError::ExpiryRequired { max } => {
            format!("passwords here must expire within {max}: choose an expiry")
        }
        ManageError::DuplicateName { name, .. } => {
            format!("you already have an active app password named {name:?}; choose another name")
        }
        other => other.to_string(),
    }
}

fn unavailable(e: &ManageError) -> PageError {
    tracing::error!(error = %e, "self-service page: store operation failed");
    PageError::Unavailable
}

fn list_url(cx: &Cx<'_>, owner: &str) -> String {
    if owner == cx.who.user {
        cx.mount().to_owned()
    } else {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("user", owner)
            .finish();
        format!("{}?{q}", cx.mount())
    }
}

/// The value of `name` in the query, when it is there exactly once.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = form_urlencoded::parse(query?.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    match (found.next(), found.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_choices() {
        assert_eq!(expiry_seconds("never", ""), Ok(None));
        assert_eq!(expiry_seconds("7d", ""), Ok(Some(7 * 86_400)));
        assert!(expiry_seconds("", "").is_err());
        assert!(expiry_seconds("soon", "").is_err());
        assert!(expiry_seconds("date", "2001-01-01").is_err());
        assert!(expiry_seconds("date", "01/01/2999").is_err());
        let far = expiry_seconds("2999-01-01", "").unwrap().unwrap();
        assert!(far > 900 * 365 * 86_400);
        assert_eq!(
            expiry_seconds("date", "2999-01-01").unwrap().unwrap() / 86_400,
            far / 86_400
        );
    }

    #[test]
    fn textarea_lines_skip_blanks_and_trim() {
        assert_eq!(
            lines(" alice/a \r\n\n\tbob/*\n  "),
            ["alice/a".to_owned(), "bob/*".to_owned()]
        );
        assert!(lines("").is_empty());
    }

    #[test]
    fn query_params_must_be_single() {
        assert_eq!(query_param(Some("user=a%20b"), "user"), Some("a b".into()));
        assert_eq!(query_param(Some("user=a&user=b"), "user"), None);
        assert_eq!(query_param(None, "user"), None);
    }
}
