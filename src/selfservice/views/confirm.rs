//! The confirmation pages before a change: revoking one password,
//! rotating one (with its grace), revoking all of a user's. Each is a GET
//! that changes nothing and offers the POST form, or says why there is
//! nothing to do.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::html;

use super::{layout, respond};
use crate::manage::Listed;
use crate::selfservice::Cx;

pub(in crate::selfservice) fn confirm_revoke_page(
    cx: &Cx<'_>,
    r: &Listed,
) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let back = cx.owner_url("", &r.user);
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
pub(in crate::selfservice) fn confirm_rotate_page(
    cx: &Cx<'_>,
    r: &Listed,
    grace: &str,
    resumed: bool,
) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let back = cx.owner_url("", &r.user);
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

pub(in crate::selfservice) fn confirm_revoke_all_page(
    cx: &Cx<'_>,
    owner: &str,
    active: usize,
) -> Response<Full<Bytes>> {
    let mount = cx.mount();
    let back = cx.owner_url("", owner);
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
