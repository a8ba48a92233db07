//! The page's handlers, one per action, each one step per line: whose
//! passwords, may this user touch them, call `manage`, audit, render.
//! No GET changes a password; every POST has passed the origin check and
//! the CSRF token before it gets here (`Cx::form`).
//!
//! This file holds the list, the form resumed after a step-up, the one
//! showing of a new password, and what every handler asks first: whose
//! list, which record, may this user act on it. The actions live in
//! [`create`] (creating and rotating: both make a password, both count
//! against the hourly limit) and [`revoke`] (one, or all of a user's).
//! Reading forms is `form`'s; HTML is `views`'.

mod create;
mod revoke;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::form::{self, CreateForm};
use super::views::{self, ListView};
use super::Cx;
use crate::clock::unix_now;
use crate::error::PageError;
use crate::manage::{self, Listed, ManageError};
use crate::store::AppPassword;

pub(super) use self::create::{confirm_rotate, create, rotate};
pub(super) use self::revoke::{confirm_revoke, confirm_revoke_all, revoke, revoke_all};

type Page = Result<Response<Full<Bytes>>, PageError>;

/// `GET {mount}[?user=NAME]`: the list and, for one's own list, the create form.
pub(super) async fn list(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let owner = viewed_user(cx, query)?;
    let form = CreateForm::defaults(cx.page.config.default_expiry);
    render_list(cx, &owner, form, None, StatusCode::OK).await
}

/// `GET {mount}/resume`, after a step-up: the interrupted action's form
/// again, filled in as the user left it, under their new session's CSRF
/// token, on every reload until it is submitted; then (or with nothing
/// kept) 303 to the list. Changes nothing.
pub(super) async fn resume(cx: &Cx<'_>) -> Page {
    let kept = cx.page.identity.kept_form(cx.gw, &cx.who).await?;
    let Some(r) = &kept else {
        return Ok(super::see_other(cx.mount()));
    };
    if r.action == form::ROTATE {
        let record = own_record(cx, &form::resumed_field(r, "id")).await?;
        let row = manage::list_row(&record);
        let grace = form::resumed_field(r, "grace");
        return Ok(views::confirm_rotate_page(cx, &row, &grace, true));
    }
    let form = CreateForm::resumed(r);
    let me = cx.who.user.clone();
    render_list_resumed(cx, &me, form).await
}

/// `GET {mount}/new/{key}`: the new password, shown once.
pub(super) fn shown_once(cx: &Cx<'_>, key: &str) -> Page {
    let created = cx
        .page
        .take_unshown(&cx.who.user, key)
        .ok_or(PageError::ShownOnce)?;
    Ok(views::created_page(cx, &created))
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

fn unavailable(e: &ManageError) -> PageError {
    tracing::error!(error = %e, "self-service page: store operation failed");
    PageError::Unavailable
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
    fn query_params_must_be_single() {
        assert_eq!(query_param(Some("user=a%20b"), "user"), Some("a b".into()));
        assert_eq!(query_param(Some("user=a&user=b"), "user"), None);
        assert_eq!(query_param(None, "user"), None);
    }
}
