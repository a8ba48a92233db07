//! OIDC sign-in in a real browser: headless Chromium driven over WebDriver
//! (fantoccini + chromedriver) through the provider's login and consent
//! forms, back to the page, a password created and cloned with, signed out;
//! and the step-up before creating with an old sign-in, which keeps the form.
//!
//! Chromium (`crate::browser`) and node (the provider) are the browser
//! toolchain: without them the tests skip with a notice, unless
//! `PASSGATE_REQUIRE_BROWSER=1` (CI), where they fail.

use std::time::{Duration, Instant};

use fantoccini::Locator;

use super::page::{clone_readme, seeded_git, Site};
use crate::browser::Browser;
use crate::support::{block_on, git_cli_routes};

const MOUNT: &str = "/-/app-passwords";

/// On the provider's pages: fill the login form as `user`, accept consent
/// if asked, until the browser is back on the gateway.
async fn sign_in_at_provider(browser: &Browser, site: &Site, user: &str) {
    let c = &browser.client;
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
        if c.find(Locator::Css("input[name=login]")).await.is_ok() {
            browser.type_into("input[name=login]", user).await;
            browser
                .type_into("input[name=password]", "any password")
                .await;
            browser.click("button[type=submit]").await;
        } else if let Ok(button) = c.find(Locator::Css("button[type=submit]")).await {
            button.click().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(browser: &Browser, name: &str) {
    browser.type_into("#name", name).await;
    browser
        .click("input[name=scope][value=\"repository:read\"]")
        .await;
    browser.click("form.create button[type=submit]").await;
}

#[test]
fn oidc_browser_signs_in_creates_clones_and_signs_out() {
    let test = "oidc_browser_signs_in_creates_clones_and_signs_out";
    let (git, work, run) = seeded_git();
    let upstream = git.url();
    let Some(site) = Site::start_with(test, "", move |_, b| {
        b.upstream = upstream;
        b.routes = git_cli_routes();
    }) else {
        return;
    };
    let password = block_on(async {
        let browser = Browser::start().await?;
        let c = &browser.client;
        c.goto(&format!("http://{}{MOUNT}", site.gw.addr))
            .await
            .unwrap();
        sign_in_at_provider(&browser, &site, "alice").await;
        assert_eq!(browser.text("#signed-in-user").await, "alice");
        let session = c.get_named_cookie("passgate").await.unwrap();
        assert_eq!(session.http_only(), Some(true));
        create(&browser, "browser laptop").await;
        let password = browser.text("#new-password").await;
        // Sign out: the session ends, the cookie goes.
        c.goto(&format!("http://{}{MOUNT}", site.gw.addr))
            .await
            .unwrap();
        browser.click("#sign-out").await;
        browser.element("#signed-out").await;
        assert!(c.get_named_cookie("passgate").await.is_err());
        browser.close().await;
        Some(password)
    });
    let Some(password) = password else {
        return;
    };
    assert_eq!(
        clone_readme(&site, &work, run, &password),
        "hello from oidc\n"
    );
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
        sign_in_at_provider(&browser, &site, "alice").await;
        browser.element("#signed-in-user").await;
        // Whole seconds on both sides: wait reauth_after + 1 s and more.
        tokio::time::sleep(Duration::from_millis(6500)).await;
        browser.type_into("#repo", "alice/project").await;
        browser.type_into("#allow_from", "127.0.0.0/8").await;
        create(&browser, "after step-up").await;
        // The provider asks for the password again (max_age)...
        browser.element("input[name=login]").await;
        let at = c.current_url().await.unwrap().to_string();
        assert!(at.starts_with(&site.provider.issuer), "{at}");
        assert!(!at.contains("step-up") && !at.contains("project"), "{at}");
        sign_in_at_provider(&browser, &site, "alice").await;
        // ...then the page shows the form again as it was: nothing created.
        browser.element("#resumed").await;
        let value = |css: &'static str| async move {
            let e = c.find(Locator::Css(css)).await.unwrap();
            e.prop("value").await.unwrap().unwrap_or_default()
        };
        assert_eq!(value("#name").await, "after step-up");
        // Reloading it shows it again (the callback, which works once, is
        // not what the address bar holds).
        let at = c.current_url().await.unwrap();
        assert_eq!(at.path(), format!("{MOUNT}/resume"), "{at}");
        c.refresh().await.unwrap();
        browser.element("#resumed").await;
        assert!(c.find(Locator::Css("#start-again")).await.is_err());
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
        browser.click("form.create button[type=submit]").await;
        let password = browser.text("#new-password").await;
        assert!(password.starts_with("pgap_"), "{password}");
        let details = c.find(Locator::Css("dl.details")).await.unwrap();
        let details = details.text().await.unwrap();
        assert!(details.contains("after step-up"), "{details}");
        assert!(details.contains("alice/project"), "{details}");
        assert!(details.contains("127.0.0.0/8"), "{details}");
        browser.close().await;
    });
}
