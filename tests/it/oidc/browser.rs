//! OIDC sign-in in a real browser: headless Chromium driven over WebDriver
//! (fantoccini + chromedriver) through the provider's login and consent
//! forms, back to the page, a password created and cloned with, signed out;
//! and the step-up before creating with an old sign-in, which keeps the form.
//!
//! Chromium (`crate::browser`) and node (the provider) are the browser
//! toolchain: without them the tests skip with a notice, unless
//! `PASSGATE_REQUIRE_BROWSER=1` (CI), where they fail.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use super::page::{git_routes, seeded_git, Site};
use crate::browser::Browser;
use crate::support::block_on;

const MOUNT: &str = "/-/app-passwords";

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// On the provider's pages: fill the login form as `user`, accept consent
/// if asked, until the browser is back on the gateway.
async fn sign_in_at_provider(c: &Client, site: &Site, user: &str) {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sign-in did not finish"
        );
        let url = c.current_url().await.unwrap().to_string();
        if !url.starts_with(&site.provider.issuer) {
            return;
        }
        if let Ok(login) = c.find(Locator::Css("input[name=login]")).await {
            login.send_keys(user).await.unwrap();
            c.find(Locator::Css("input[name=password]"))
                .await
                .unwrap()
                .send_keys("any password")
                .await
                .unwrap();
            c.find(Locator::Css("button[type=submit]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        } else if let Ok(button) = c.find(Locator::Css("button[type=submit]")).await {
            button.click().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(c: &Client, name: &str) {
    wait_for(c, "#name").await.send_keys(name).await.unwrap();
    c.find(Locator::Css("input[name=scope][value=\"repository:read\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("form.create button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[test]
fn oidc_browser_signs_in_creates_clones_and_signs_out() {
    let test = "oidc_browser_signs_in_creates_clones_and_signs_out";
    let (git, work, run) = seeded_git();
    let upstream = git.url();
    let Some(site) = Site::start_with(test, "", move |_, b| {
        b.upstream = upstream;
        b.routes = git_routes();
    }) else {
        return;
    };
    let password = block_on(async {
        let browser = Browser::start().await?;
        let c = &browser.client;
        c.goto(&format!("http://{}{MOUNT}", site.gw.addr))
            .await
            .unwrap();
        sign_in_at_provider(c, &site, "alice").await;
        let who = wait_for(c, "#signed-in-user").await.text().await.unwrap();
        assert_eq!(who, "alice");
        let session = c.get_named_cookie("passgate").await.unwrap();
        assert_eq!(session.http_only(), Some(true));
        create(c, "browser laptop").await;
        let password = wait_for(c, "#new-password").await.text().await.unwrap();
        // Sign out: the session ends, the cookie goes.
        c.goto(&format!("http://{}{MOUNT}", site.gw.addr))
            .await
            .unwrap();
        wait_for(c, "#sign-out").await.click().await.unwrap();
        wait_for(c, "#signed-out").await;
        assert!(c.get_named_cookie("passgate").await.is_err());
        browser.close().await;
        Some(password)
    });
    let Some(password) = password else {
        return;
    };
    let url = format!("http://alice:{password}@{}/alice/project.git", site.gw.addr);
    run(
        work.path(),
        &[
            "-c",
            "credential.helper=",
            "clone",
            "--quiet",
            &url,
            "clone",
        ],
    );
    assert!(work.path().join("clone/README").exists());
}

#[test]
fn oidc_browser_step_up_goes_back_to_the_provider_and_keeps_the_form() {
    let test = "oidc_browser_step_up_keeps_the_form";
    let Some(site) = Site::start(test, "reauth_after = \"5s\"") else {
        return;
    };
    block_on(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let c = &browser.client;
        c.goto(&format!("http://{}{MOUNT}", site.gw.addr))
            .await
            .unwrap();
        sign_in_at_provider(c, &site, "alice").await;
        wait_for(c, "#signed-in-user").await;
        // Whole seconds on both sides: wait reauth_after + 1 s and more.
        tokio::time::sleep(Duration::from_millis(6500)).await;
        c.find(Locator::Css("#repo"))
            .await
            .unwrap()
            .send_keys("alice/project")
            .await
            .unwrap();
        c.find(Locator::Css("#allow_from"))
            .await
            .unwrap()
            .send_keys("127.0.0.0/8")
            .await
            .unwrap();
        create(c, "after step-up").await;
        // The provider asks for the password again (max_age)...
        wait_for(c, "input[name=login]").await;
        let at = c.current_url().await.unwrap().to_string();
        assert!(at.starts_with(&site.provider.issuer), "{at}");
        assert!(!at.contains("step-up") && !at.contains("project"), "{at}");
        sign_in_at_provider(c, &site, "alice").await;
        // ...then the page shows the form again as it was: nothing created.
        wait_for(c, "#resumed").await;
        let value = |css: &'static str| async move {
            let e = c.find(Locator::Css(css)).await.unwrap();
            e.prop("value").await.unwrap().unwrap_or_default()
        };
        assert_eq!(value("#name").await, "after step-up");
        assert_eq!(value("#repo").await, "alice/project");
        assert_eq!(value("#allow_from").await, "127.0.0.0/8");
        let scope = c
            .find(Locator::Css("input[name=scope][value=\"repository:read\"]"))
            .await
            .unwrap();
        assert_eq!(
            scope.prop("checked").await.unwrap().as_deref(),
            Some("true")
        );
        assert!(
            c.find(Locator::Css("#passwords")).await.is_err(),
            "nothing created yet"
        );
        // Confirming it: an ordinary same-origin POST with the new session's
        // CSRF token, from the page the provider sent the browser back to.
        c.find(Locator::Css("form.create button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let password = wait_for(c, "#new-password").await.text().await.unwrap();
        assert!(password.starts_with("pgap_"), "{password}");
        let details = c.find(Locator::Css("dl.details")).await.unwrap();
        let details = details.text().await.unwrap();
        assert!(details.contains("after step-up"), "{details}");
        assert!(details.contains("alice/project"), "{details}");
        assert!(details.contains("127.0.0.0/8"), "{details}");
        browser.close().await;
    });
}
