//! Revoking: one password (its owner or an admin), or every active one of a
//! user (`user` for admins). Each GET is a confirmation that changes
//! nothing; each POST revokes, tells `auth` so no cached verification
//! outlives it, audits, and goes back (303) to the list it came from.

use super::{listed, owned_record, query_param, unavailable, viewed_user, Page};
use crate::audit::{self, AuditEvent};
use crate::error::PageError;
use crate::manage::{self, ManageError};
use crate::selfservice::form::Form;
use crate::selfservice::views;
use crate::selfservice::{see_other, Cx};

/// `GET {mount}/revoke?id=ID`: the confirmation step (changes nothing).
pub(in crate::selfservice) async fn confirm_revoke(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let id = query_param(query, "id").ok_or(PageError::NotFound)?;
    let record = owned_record(cx, &id).await?;
    let row = manage::list_row(&record);
    Ok(views::confirm_revoke_page(cx, &row))
}

/// `POST {mount}/revoke` (`id`): revokes, 303 back to the list it came from.
pub(in crate::selfservice) async fn revoke(cx: &Cx<'_>, form: &Form) -> Page {
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
    Ok(see_other(&cx.owner_url("", &record.user)))
}

/// `GET {mount}/revoke-all[?user=NAME]`: the confirmation step.
pub(in crate::selfservice) async fn confirm_revoke_all(cx: &Cx<'_>, query: Option<&str>) -> Page {
    let owner = viewed_user(cx, query)?;
    let rows = listed(cx, &owner).await?;
    let active = rows.iter().filter(|r| r.status == "active").count();
    Ok(views::confirm_revoke_all_page(cx, &owner, active))
}

/// `POST {mount}/revoke-all` (`user` for admins): revokes every active one.
pub(in crate::selfservice) async fn revoke_all(cx: &Cx<'_>, form: &Form) -> Page {
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
    Ok(see_other(&cx.owner_url("", &owner)))
}
