//! The pre-login record an anonymous visitor makes the gateway write (one
//! per sign-in started): bounded per client address and in all, written
//! only for a browser opening the page itself; a sign-in that took too long
//! (the pre-login record or the provider's code expired) ends on a page that
//! starts it again; and the callback never keeps a
//! session id the browser arrived with nor goes anywhere but the page.

use std::time::Duration;

use super::page::{set_cookie, Site};
use super::provider::Agent;
use crate::support::{block_on, http1_async_from, Reply};

const MOUNT: &str = "/-/app-passwords";

/// Whether `r` started a sign-in: a 302 to the provider with a pre-login cookie.
fn started(site: &Site, r: &Reply) -> bool {
    let to_issuer = r
        .headers
        .get("location")
        .is_some_and(|l| l.to_str().unwrap().starts_with(&site.provider.issuer));
    let cookie = r
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("passgate-login="));
    assert_eq!(to_issuer, cookie, "{:?}", r.headers);
    r.status == 302 && to_issuer
}

/// `r` is a failed callback's page: 400 saying `why`, a link that starts
/// again from the page, no session, an audit line.
fn start_again_page(site: &Site, r: &Reply, why: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let text = r.text();
    assert!(text.contains(why), "{why}: {text}");
    let link = format!("id=\"start-again\" href=\"{MOUNT}\"");
    assert!(text.contains(&link), "{text}");
    assert!(r
        .headers
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("passgate=")));
    assert!(site.gw.wait_log("sign_in_failed", Duration::from_secs(5)));
}

#[test]
fn oidc_page_sign_ins_are_bounded_per_address_and_in_all() {
    let Some(site) = Site::start_with(
        "oidc_page_sign_ins_are_bounded",
        "sign_ins_per_address = 3\nmax_sign_ins_in_progress = 5\n",
        |_, b| {
            b.server_extra
                .push_str("trusted_proxies = [\"127.0.0.1/32\"]\n");
            b.extra.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
        },
    ) else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        // Signed in first: one sign-in from this address, one in progress.
        let mut alice = site.signed_in("alice").await;
        // What is not a browser opening the page writes nothing and costs
        // nothing: a subresource or a frame another site embeds, a prefetch,
        // a POST, another path under the mount (sent to the page itself).
        for _ in 0..5 {
            for extra in [
                [("sec-fetch-dest", "image"), ("sec-fetch-mode", "no-cors")],
                [("sec-fetch-dest", "iframe"), ("sec-fetch-mode", "navigate")],
                [("sec-fetch-dest", "document"), ("sec-purpose", "prefetch")],
                [("sec-fetch-dest", "script"), ("purpose", "x")],
            ] {
                let r = Agent::default().get_with(addr, MOUNT, &extra).await;
                assert_eq!(r.status, 401, "{extra:?}: {}", r.text());
                assert!(!started(&site, &r));
            }
            let r = Agent::default()
                .get(addr, &format!("{MOUNT}/revoke?id=x"))
                .await;
            assert_eq!(r.status, 302, "{}", r.text());
            assert_eq!(r.headers["location"], MOUNT);
            assert!(!started(&site, &r));
            let r = Agent::default()
                .post_with(addr, MOUNT, "", &[("origin", &site.origin())])
                .await;
            assert_eq!(r.status, 401, "{}", r.text());
            assert!(!started(&site, &r));
        }
        // A browser opening the page: three sign-ins per address (alice's
        // was the first), then 429.
        let nav = [
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "navigate"),
        ];
        for _ in 0..2 {
            let r = Agent::default().get_with(addr, MOUNT, &nav).await;
            assert!(started(&site, &r), "{}: {}", r.status, r.text());
        }
        let r = Agent::default().get_with(addr, MOUNT, &nav).await;
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(!started(&site, &r));
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=200).contains(&wait), "{wait}");
        assert!(r.text().contains("too many sign-ins"), "{}", r.text());
        assert_eq!(r.headers["cache-control"], "no-store");
        assert!(site.gw.wait_log(
            "reason=per-address event=\"sign_in_limited\"",
            Duration::from_secs(5)
        ));
        // Another client behind the trusted proxy has its own share...
        let from = |ip: &'static str| [("x-forwarded-for", ip)];
        let r = Agent::default()
            .get_with(addr, MOUNT, &from("192.0.2.7"))
            .await;
        assert!(started(&site, &r), "{}: {}", r.status, r.text());
        let r = Agent::default()
            .get_with(addr, MOUNT, &from("192.0.2.8"))
            .await;
        assert!(started(&site, &r), "{}: {}", r.status, r.text());
        // ...until five sign-ins are in progress: then nobody starts one
        // (503) until the oldest expires; nothing more is written.
        let r = Agent::default()
            .get_with(addr, MOUNT, &from("192.0.2.9"))
            .await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(!started(&site, &r));
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=600).contains(&wait), "{wait}");
        assert!(r.text().contains("in progress"), "{}", r.text());
        assert!(site.gw.wait_log(
            "peer=192.0.2.9 reason=in-progress event=\"sign_in_limited\"",
            Duration::from_secs(5)
        ));
        // Counted by the limit that refused.
        assert!(site
            .gw
            .wait_log("metrics on http://", Duration::from_secs(10)));
        let text = site.gw.log_text();
        let rest = text.split("metrics on http://").nth(1).unwrap();
        let at = rest.split('/').next().unwrap().parse().unwrap();
        let scraped = http1_async_from(None, at, "GET", "/metrics", &[], b"")
            .await
            .text();
        for limit in ["per_address", "in_progress"] {
            let series = format!("passgate_sign_ins_refused_total{{limit=\"{limit}\"}} 1");
            assert!(
                scraped.lines().any(|l| l == series),
                "no {series} in {scraped}"
            );
        }
        // Behind the trusted proxy, a failed sign-in's audit line names the
        // client, not the proxy (fail2ban bans what `peer` says).
        let junk = format!("{MOUNT}/callback?state=x&code=y");
        let r = Agent::default()
            .get_with(addr, &junk, &from("192.0.2.50"))
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(site.gw.wait_log(
            "peer=192.0.2.50 reason=\"sign-in-failed\"",
            Duration::from_secs(5)
        ));
        // A signed-in browser is not touched by either limit.
        let r = alice.get(addr, MOUNT).await;
        assert_eq!(r.status, 200, "{}", r.text());
    });
}

#[test]
fn oidc_page_sign_in_past_its_timeout_gets_a_page_to_start_again() {
    let Some(site) = Site::start(
        "oidc_page_sign_in_past_its_timeout",
        "sign_in_timeout = \"2s\"\n",
    ) else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        let mut agent = Agent::default();
        let r = agent.get(addr, MOUNT).await;
        assert_eq!(r.status, 302, "{}", r.text());
        let login = set_cookie(&r, "passgate-login");
        assert!(login.contains("; Max-Age=2;"), "{login}");
        let to = r.headers["location"].to_str().unwrap().to_owned();
        let target = site.sign_in_at_provider(&mut agent, &to, "alice").await;
        // The user took longer than sign_in_timeout at the provider (the
        // browser still sends the cookie: a clock that ran ahead, a
        // cookie kept by hand): the record has expired in the store.
        let cookie = agent.cookie("passgate-login").unwrap();
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let mut late = Agent::default();
        late.set_cookie("passgate-login", &cookie);
        let r = late.get(addr, &target).await;
        start_again_page(&site, &r, "expired");
        // Starting again works: the link opens the page, a new sign-in.
        let mut again = Agent::default();
        let target = site.to_callback(&mut again, "alice").await;
        let r = again.get(addr, &target).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(again.get(addr, MOUNT).await.status, 200);
        // A code the provider refuses (used already) gets the same way out.
        let r = late.get(addr, &target).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("id=\"start-again\""), "{}", r.text());
    });
}

#[test]
fn oidc_page_expired_authorization_code_gets_a_page_to_start_again() {
    let Some(site) = Site::start("oidc_page_expired_authorization_code", "") else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        site.provider.code_ttl(1).await;
        let mut agent = Agent::default();
        let target = site.to_callback(&mut agent, "alice").await;
        // The browser came back late (a suspended laptop): the provider
        // refuses the expired code at the token endpoint.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = agent.get(addr, &target).await;
        start_again_page(&site, &r, "refused the authorization code");
        // The pre-login record is used up; the link starts a new sign-in,
        // which completes with a code redeemed in time.
        assert_eq!(agent.get(addr, &target).await.status, 400);
        site.provider.code_ttl(60).await;
        let target = site.to_callback(&mut agent, "alice").await;
        assert_eq!(agent.get(addr, &target).await.status, 200);
        assert_eq!(agent.get(addr, MOUNT).await.status, 200);
    });
}

#[test]
fn oidc_page_callback_never_keeps_a_planted_session_nor_redirects_elsewhere() {
    let Some(site) = Site::start("oidc_page_callback_session_fixation", "") else {
        return;
    };
    block_on(async {
        let addr = site.gw.addr;
        // The attacker's own session id, planted in the victim's browser
        // (a sibling domain, plain HTTP), and a page address that names
        // somewhere else to go after the sign-in.
        let mallory_side = site.signed_in("bob").await;
        let planted = mallory_side.cookie("passgate").unwrap();
        let mut victim = Agent::default();
        victim.set_cookie("passgate", &"A".repeat(43));
        let r = victim
            .get(
                addr,
                &format!("{MOUNT}?return_to=https%3A%2F%2Fevil.example%2F&next=//evil.example/"),
            )
            .await;
        assert_eq!(r.status, 302, "{}", r.text());
        let to = r.headers["location"].to_str().unwrap().to_owned();
        assert!(!to.contains("evil.example"), "{to}");
        let target = site.sign_in_at_provider(&mut victim, &to, "alice").await;
        victim.set_cookie("passgate", &planted);
        let r = victim.get(addr, &target).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(!text.contains("evil.example"), "{text}");
        assert!(
            text.contains(&format!("content=\"0;url={MOUNT}\"")),
            "{text}"
        );
        // A fresh id for the victim; the planted one is ended, not promoted.
        let fresh = victim.cookie("passgate").unwrap();
        assert_ne!(fresh, planted);
        assert_eq!(fresh.len(), 43);
        let page = victim.get(addr, MOUNT).await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains(">alice<"), "{}", page.text());
        let mut attacker = Agent::default();
        attacker.set_cookie("passgate", &planted);
        assert_eq!(attacker.get(addr, MOUNT).await.status, 302);
    });
}
