//! Step-up before creating or rotating with an old sign-in: the page goes
//! back to the provider with `max_age`, keeps what the user filled in
//! (server-side, never in a URL), and shows it again once they are back,
//! under the new session's CSRF token, at `{mount}/resume`, reload after
//! reload; nothing happens until it is submitted, the same-origin and CSRF
//! checks included. Step-ups count per user, not against the address.

use std::time::Duration;

use super::page::{csrf, Site};
use super::provider::Agent;
use crate::support::{block_on, Reply};

const MOUNT: &str = "/-/app-passwords";

/// The `href` of the element with `id` in `page`, unescaped.
fn href(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\" href=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id}: {page}"))
        + marker.len();
    page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&")
}

/// Waits until a sign-in made now is older than a `reauth_after` of 3 s
/// (whole seconds on both sides: 3 s + 1 s and more).
async fn let_sign_in_age() {
    tokio::time::sleep(Duration::from_millis(4200)).await;
}

/// From the step-up page `r`: signs in again at the provider as `user`,
/// opens the callback and follows the page it answers (a refresh, as
/// after every sign-in: the session cookie is `SameSite=Strict`); the
/// answer of the page it goes on to.
async fn sign_in_again(site: &Site, agent: &mut Agent, r: &Reply, user: &str) -> Reply {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.get("location").is_none());
    let to = href(&r.text(), "sign-in-again");
    assert!(to.contains("max_age=3"), "{to}");
    let target = site.sign_in_at_provider(agent, &to, user).await;
    let r = agent.get(site.gw.addr, &target).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let next = href(&r.text(), "continue");
    assert!(
        r.text()
            .contains(&format!("http-equiv=\"refresh\" content=\"0;url={next}\"")),
        "{}",
        r.text()
    );
    agent.get(site.gw.addr, &next).await
}

#[test]
fn oidc_page_step_up_keeps_the_create_form_and_still_needs_csrf() {
    let Some(site) = Site::start("oidc_page_step_up_keeps_the_form", "reauth_after = \"3s\"")
    else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        let mut agent = site.signed_in("alice").await;
        let old_token = csrf(&agent.get(addr, MOUNT).await.text());
        let_sign_in_age().await;
        let body = format!(
            "csrf={old_token}&name=stepped-up+%3Ci%3E%22x%22%3C%2Fi%3E&scope=repository%3Aread&expires=date&expires_on=2999-01-31&repo=alice%2Fproject%0D%0Aalice%2F*&allow_from=127.0.0.0%2F8"
        );
        let r = site.post(&mut agent, "/create", &body).await;
        let text = r.text();
        assert!(
            text.contains("Sign in again to create an app password"),
            "{text}"
        );
        assert!(!text.contains("rotate"), "{text}");
        // What the user typed stays on the server: not in the way to the
        // provider, not in a cookie.
        let to = href(&text, "sign-in-again");
        for typed in ["stepped-up", "alice%2Fproject", "0.0%2F8", "0.0/8", "2999"] {
            assert!(!to.contains(typed), "{typed} in {to}");
        }
        assert!(r
            .headers
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().contains("stepped")));

        let r = sign_in_again(&site, &mut agent, &r, "alice").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.text();
        // The form again, filled in as it was, under the new session.
        assert!(page.contains("id=\"resumed\""), "{page}");
        // Escaped like everything typed: the kept form is no way in for markup.
        assert!(
            page.contains("value=\"stepped-up &lt;i&gt;&quot;x&quot;&lt;/i&gt;\""),
            "{page}"
        );
        assert!(!page.contains("<i>"), "{page}");
        assert!(
            page.contains("name=\"scope\" value=\"repository:read\" checked"),
            "{page}"
        );
        assert!(page.contains("value=\"2999-01-31\""), "{page}");
        assert!(
            page.contains(">alice/project\r\nalice/*</textarea>"),
            "{page}"
        );
        assert!(page.contains(">127.0.0.0/8</textarea>"), "{page}");
        // Nothing was created on the way.
        assert!(page.contains("No app passwords yet."), "{page}");
        assert!(site.gw.wait_log("step_up=true", Duration::from_secs(5)));
        let token = csrf(&page);
        assert_ne!(token, old_token);
        // A reload shows the same form again, not a failed sign-in: it is
        // kept under the session, not in the callback that worked once.
        for _ in 0..2 {
            let again = agent.get(addr, &format!("{MOUNT}/resume")).await;
            assert_eq!(again.status, 200, "{}", again.text());
            let again = again.text();
            assert!(again.contains("id=\"resumed\""), "{again}");
            assert!(again.contains("value=\"stepped-up &lt;i&gt;"), "{again}");
            assert!(again.contains(">127.0.0.0/8</textarea>"), "{again}");
            assert_eq!(csrf(&again), token);
        }
        // It is this session's: another browser of alice's gets the list.
        let mut other = site.signed_in("alice").await;
        let r = other.get(addr, &format!("{MOUNT}/resume")).await;
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.headers["location"], MOUNT);

        // Submitting it is an ordinary POST: the old session's token, a
        // forged one or another origin is refused, nothing created.
        let again = body.replace(&old_token, &token);
        for bad in [body.clone(), body.replace(&old_token, &"0".repeat(64))] {
            let r = site.post(&mut agent, "/create", &bad).await;
            assert_eq!(r.status, 403, "{}", r.text());
        }
        let r = agent
            .post_with(
                addr,
                &format!("{MOUNT}/create"),
                &again,
                &[("origin", "http://evil.example")],
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!agent.get(addr, MOUNT).await.text().contains("stepped-up"));

        let r = site.post(&mut agent, "/create", &again).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let shown = r.headers["location"].to_str().unwrap().to_owned();
        // Submitted: the kept form is done with, a reload of it is the list.
        let r = agent.get(addr, &format!("{MOUNT}/resume")).await;
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.headers["location"], MOUNT);
        let page = agent.get(addr, &shown).await.text();
        assert!(page.contains("id=\"new-password\""), "{page}");
        assert!(page.contains("stepped-up"), "{page}");
        assert!(page.contains("alice/project"), "{page}");
        assert!(page.contains("127.0.0.0/8"), "{page}");
        assert!(
            page.contains("2999-02-01") || page.contains("2999-01-31"),
            "{page}"
        );
    });
}

#[test]
fn oidc_page_step_up_keeps_the_rotation_and_its_grace() {
    let Some(site) = Site::start(
        "oidc_page_step_up_keeps_the_rotation",
        "reauth_after = \"3s\"",
    ) else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        let mut agent = site.signed_in("alice").await;
        let token = csrf(&agent.get(addr, MOUNT).await.text());
        let body = format!("csrf={token}&name=laptop&scope=repository%3Aread&expires=7d");
        assert_eq!(site.post(&mut agent, "/create", &body).await.status, 303);
        let list = agent.get(addr, MOUNT).await.text();
        let at = list.find("id=\"pw-").expect("the new row") + 7;
        let id = list[at..at + 12].to_owned();

        let_sign_in_age().await;
        let confirm = agent.get(addr, &format!("{MOUNT}/rotate?id={id}")).await;
        assert_eq!(confirm.status, 200, "{}", confirm.text());
        let token = csrf(&confirm.text());
        let body = format!("csrf={token}&id={id}&grace=1h");
        let r = site.post(&mut agent, "/rotate", &body).await;
        let text = r.text();
        assert!(
            text.contains("Sign in again to rotate an app password"),
            "{text}"
        );
        assert!(!text.contains("to create"), "{text}");
        assert!(!href(&text, "sign-in-again").contains(&id));

        let r = sign_in_again(&site, &mut agent, &r, "alice").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.text();
        assert!(page.contains("id=\"resumed\""), "{page}");
        assert!(page.contains("Rotate “laptop”?"), "{page}");
        assert!(page.contains("<option value=\"1h\" selected>"), "{page}");
        assert!(
            page.contains(&format!("name=\"id\" value=\"{id}\"")),
            "{page}"
        );
        // Not rotated yet.
        let list = agent.get(addr, MOUNT).await.text();
        assert!(!list.contains("replaced by"), "{list}");
        let new_token = csrf(&page);
        let r = site.post(&mut agent, "/rotate", &body).await;
        assert_eq!(r.status, 403, "the old session's token: {}", r.text());
        let body = format!("csrf={new_token}&id={id}&grace=1h");
        let r = site.post(&mut agent, "/rotate", &body).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let shown = r.headers["location"].to_str().unwrap().to_owned();
        let page = agent.get(addr, &shown).await.text();
        assert!(page.contains("id=\"rotated-from\""), "{page}");
        assert!(page.contains(&id), "{page}");
    });
}

#[test]
fn oidc_page_step_up_by_another_user_gets_no_form_back() {
    let Some(site) = Site::start("oidc_page_step_up_by_another_user", "reauth_after = \"3s\"")
    else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        let mut agent = site.signed_in("alice").await;
        let token = csrf(&agent.get(addr, MOUNT).await.text());
        let_sign_in_age().await;
        let body = format!(
            "csrf={token}&name=alices-draft&scope=repository%3Aread&expires=7d&repo=alice%2Fprivate"
        );
        let r = site.post(&mut agent, "/create", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        // At the provider, someone else signs in (a shared computer; its
        // own session there, so the provider's cookies are not alice's).
        let to = href(&r.text(), "sign-in-again");
        let mut bob = Agent::default();
        let target = site.sign_in_at_provider(&mut bob, &to, "bob").await;
        let r = agent.get(addr, &target).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(!text.contains("alices-draft"), "{text}");
        assert!(!text.contains("alice/private"), "{text}");
        assert!(!text.contains("id=\"resumed\""), "{text}");
        assert_eq!(href(&text, "continue"), MOUNT, "{text}");
        let r = agent.get(addr, &format!("{MOUNT}/resume")).await;
        assert_eq!(r.status, 303, "nothing kept for bob: {}", r.text());
        let page = agent.get(addr, MOUNT).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.text();
        assert!(page.contains(">bob<"), "{page}");
        assert!(!page.contains("alices-draft"), "{page}");
        assert!(!page.contains("alice/private"), "{page}");
    });
}

#[test]
fn oidc_page_step_ups_count_per_user_not_against_the_address() {
    // Each sign-in the address may start and each place in progress is
    // precious here: alice's own sign-in takes one of each.
    let Some(site) = Site::start(
        "oidc_page_step_ups_count_per_user",
        "reauth_after = \"3s\"\nsign_ins_per_address = 2\nmax_sign_ins_in_progress = 2\n",
    ) else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        let mut agent = site.signed_in("alice").await;
        let token = csrf(&agent.get(addr, MOUNT).await.text());
        let_sign_in_age().await;
        let body = format!("csrf={token}&name=again&scope=repository%3Aread&expires=7d");
        // Ten step-ups started and abandoned (a closed tab, a provider that
        // failed): each a page going on to the provider.
        for i in 0..10 {
            let r = site.post(&mut agent, "/create", &body).await;
            assert_eq!(r.status, 200, "step-up {i}: {}", r.text());
            assert!(r.text().contains("id=\"sign-in-again\""), "{}", r.text());
        }
        // Her neighbours behind the same address still sign in: the
        // step-ups took neither the address's share nor a place in progress.
        let r = Agent::default().get(addr, MOUNT).await;
        assert_eq!(r.status, 302, "{}", r.text());
        let to = r.headers["location"].to_str().unwrap();
        assert!(to.starts_with(&site.provider.issuer), "{to}");
        // The eleventh is refused for her alone, and says why.
        let r = site.post(&mut agent, "/create", &body).await;
        assert_eq!(r.status, 429, "{}", r.text());
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            r.text().contains("sent to sign in again too many times"),
            "{}",
            r.text()
        );
        assert!(!r.text().contains("id=\"sign-in-again\""), "{}", r.text());
        assert!(site.gw.wait_log(
            "reason=per-user event=\"sign_in_limited\"",
            Duration::from_secs(5)
        ));
        // Still signed in; nothing was created on the way.
        let page = agent.get(addr, MOUNT).await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.text().contains("No app passwords yet."));

        // Without a session, a POST does not start a sign-in: the 401 page
        // says how to sign in here (the OIDC page signs in itself) and links
        // to it, not the header mode's "organisation's sign-in".
        let r = Agent::default()
            .post_with(
                addr,
                &format!("{MOUNT}/create"),
                &body,
                &[("origin", &site.origin())],
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
        let text = r.text();
        assert!(
            text.contains("open the app-password page to sign in"),
            "{text}"
        );
        assert!(
            text.contains(&format!("id=\"sign-in\" href=\"{MOUNT}\"")),
            "{text}"
        );
        assert!(!text.contains("organisation"), "{text}");
    });
}
