//! Creating and rotating: the two actions that make a password. Both ask
//! for a recent sign-in first (the step-up, which keeps the form), both
//! count against [`CREATES_PER_HOUR`] under the page's creation lock, and
//! both end in a 303 to the one-time page that shows the new password.

use http::StatusCode;

use super::{own_record, query_param, render_list, unavailable, Page};
use crate::audit::{self, AuditEvent};
use crate::clock::unix_now;
use crate::error::PageError;
use crate::manage::{self, CreateRequest, ManageError, RotateRequest};
use crate::oidc::Resume;
use crate::selfservice::form::{self, CreateForm, Form};
use crate::selfservice::views;
use crate::selfservice::{see_other, Cx, CREATES_PER_HOUR};

/// `POST {mount}/create`: creates, keeps it for one showing, 303 to that page.
pub(in crate::selfservice) async fn create(cx: &Cx<'_>, form: &Form) -> Page {
    let mut filled = CreateForm::posted(form)?;
    let resume = Resume {
        action: form::CREATE.to_owned(),
        fields: filled.fields(),
    };
    if let Some(page) = cx.step_up(resume).await {
        return page;
    }
    let me = cx.who.user.clone();
    let expires_in = match form::expiry_seconds(&filled.expires, &filled.expires_on) {
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
        repos: form::lines(&filled.repos),
        allow_from: form::lines(&filled.allow_from),
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
            filled.bad = form::bad_field(&e);
            return render_list(cx, &me, filled, Some(form::form_message(&e)), status).await;
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
    // A form a step-up kept is done with: reloading it shows the list.
    cx.page.identity.forget_form(cx.gw, &cx.who).await;
    Ok(see_other(&format!("{}/new/{key}", cx.mount())))
}

/// `GET {mount}/rotate?id=ID`: the confirmation step (changes nothing).
pub(in crate::selfservice) async fn confirm_rotate(cx: &Cx<'_>, query: Option<&str>) -> Page {
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
pub(in crate::selfservice) async fn rotate(cx: &Cx<'_>, form: &Form) -> Page {
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
        action: form::ROTATE.to_owned(),
        fields: vec![("id".into(), id.clone()), ("grace".into(), chosen.into())],
    };
    if let Some(page) = cx.step_up(resume).await {
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
    // A form a step-up kept is done with: reloading it shows the list.
    cx.page.identity.forget_form(cx.gw, &cx.who).await;
    Ok(see_other(&format!("{}/new/{key}", cx.mount())))
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
