//! The self-service page end to end in a real browser with real git: alice,
//! signed in by an SSO proxy in front, creates a `repository:read` password,
//! clones with it, is refused a push (403 naming the scope), revokes it
//! through the confirmation step, and the next clone fails at once (401).
//!
//! `PASSGATE_SCREENSHOT=FILE` also saves the list page as a PNG (how
//! docs/selfservice.png is made).

use std::path::Path;

use fantoccini::Locator;

use crate::browser::{screenshot, Browser, Front};
use crate::cgi::{git_command, GitServer};
use crate::selfservice::{page_config, MOUNT, TRUSTED};
use crate::support::*;

async fn get_async(addr: std::net::SocketAddr, target: &str, password: &str) -> Reply {
    let auth = basic("alice", password);
    http1_async_from(None, addr, "GET", target, &[("authorization", &auth)], b"").await
}

fn git(home: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    git_command(home, dir).args(args).output().unwrap()
}

/// One empty commit on `main` (made in `home/seed`), pushed to each of `bares`.
fn seed(home: &Path, bares: &[&Path]) {
    let seed = home.join("seed");
    std::fs::create_dir(&seed).unwrap();
    let run = |args: &[&str]| {
        let out = git(home, &seed, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    run(&["init", "--quiet", "--initial-branch=main"]);
    run(&["commit", "--quiet", "--allow-empty", "-m", "first"]);
    for bare in bares {
        run(&["push", "--quiet", bare.to_str().unwrap(), "main"]);
    }
}

#[test]
fn alice_creates_uses_and_revokes_an_app_password_in_the_browser() {
    let cgi = GitServer::start();
    let bare = cgi.bare_repo("alice", "project");
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    seed(home, &[&bare]);
    let mut config = page_config(&cgi.url());
    config.routes = git_cli_routes() + WEB_ROUTE;
    let pg = Passgate::start(&config);
    let front = Front::start(pg.addr, TRUSTED.parse().unwrap(), "remote-user", "alice");

    block_on(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let c = &browser.client;
        // Alice opens the page through her SSO proxy and fills the form.
        c.goto(&front.url(MOUNT)).await.unwrap();
        assert_eq!(browser.text("#signed-in-user").await, "alice");
        browser.type_into("#name", "laptop git").await;
        browser
            .click("input[name=scope][value='repository:read']")
            .await;
        browser.click("form.create button[type=submit]").await;
        let password = browser.text("#new-password").await;
        assert!(
            password.starts_with("pgap_") && password.len() == 55,
            "{password}"
        );
        let id = password[5..17].to_owned();
        let result_url = c.current_url().await.unwrap();
        let page = browser.source().await;
        assert!(
            page.contains(&format!("git clone http://alice@{}/", front.addr)),
            "{page}"
        );

        // The real git CLI clones with it through the gateway...
        let url = format!("http://alice:{password}@{}/alice/project.git", pg.addr);
        let clone = home.join("clone");
        let out = git(
            home,
            home,
            &["clone", "--quiet", &url, clone.to_str().unwrap()],
        );
        assert!(out.status.success(), "clone: {out:?}");
        // ...and is refused a push, with 403 (git keeps the password).
        let out = git(
            home,
            &clone,
            &["commit", "--quiet", "--allow-empty", "-m", "no"],
        );
        assert!(out.status.success());
        let out = git(home, &clone, &["push", "origin", "main"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("403"), "{stderr}");
        let r = get_async(
            pg.addr,
            "/alice/project.git/info/refs?service=git-receive-pack",
            &password,
        )
        .await;
        assert_eq!(r.status, 403);
        assert!(r.text().contains("repository:write"), "{}", r.text());

        // Back on the list, with the new password on it.
        c.goto(&front.url(MOUNT)).await.unwrap();
        browser
            .wait_text(&format!("#pw-{id} .status"), "active")
            .await;
        if let Some(file) = std::env::var_os("PASSGATE_SCREENSHOT") {
            screenshot(&browser, Path::new(&file)).await;
        }
        // Revoke, through the confirmation step.
        browser.click("a[aria-label='Revoke laptop git']").await;
        browser.element("#confirm-revoke").await;
        assert!(browser.source().await.contains("cannot be undone"));
        browser.click("#confirm-revoke").await;
        browser
            .wait_text(&format!("#pw-{id} .status"), "revoked")
            .await;
        assert_eq!(c.current_url().await.unwrap().path(), MOUNT);

        // The next clone fails at once, with 401.
        let out = git(
            home,
            home,
            &[
                "clone",
                "--quiet",
                &url,
                home.join("again").to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("Authentication failed"), "{stderr}");
        let r = get_async(
            pg.addr,
            "/alice/project.git/info/refs?service=git-upload-pack",
            &password,
        )
        .await;
        assert_eq!(r.status, 401);

        // Reloading the result page does not show the password again.
        c.goto(result_url.as_str()).await.unwrap();
        let again = browser.source().await;
        assert!(!again.contains(&password), "{again}");
        assert!(again.contains("shown once"), "{again}");
        assert!(c.find(Locator::Css("#new-password")).await.is_err());
        browser.close().await;
    });
}

#[test]
fn the_page_cannot_be_framed_by_another_site() {
    let backend = Backend::start();
    let pg = Passgate::start(&page_config(&backend.url()));
    let front = Front::start(pg.addr, TRUSTED.parse().unwrap(), "remote-user", "alice");
    // A hostile page on another origin (the echo backend's web route is as
    // good as any) frames the page: the browser must refuse to render it.
    block_on(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let c = &browser.client;
        c.goto(&front.url(MOUNT)).await.unwrap();
        let framing = format!(
            "data:text/html,<iframe id=f src='{}'></iframe>",
            front.url(MOUNT)
        );
        c.goto(&framing).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let frame = c.find(Locator::Css("#f")).await.unwrap();
        frame.enter_frame().await.unwrap();
        let inside = c.source().await.unwrap_or_default();
        assert!(!inside.contains("signed-in-user"), "framed: {inside}");
        browser.close().await;
    });
}

/// Issue #14 on the page: alice creates a password limited to one
/// repository in the browser, real git clones that repository and gets 403
/// on another, she rotates it on the page, and the old password then fails
/// while the successor (same limit) works.
#[test]
fn alice_limits_a_password_to_one_repository_and_rotates_it_in_the_browser() {
    let cgi = GitServer::start();
    let project = cgi.bare_repo("alice", "project");
    let other = cgi.bare_repo("alice", "other");
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    seed(home, &[&project, &other]);
    let mut config = page_config(&cgi.url());
    // Every Git route names its repository, so a limited password can be used.
    config.routes = git_cli_routes().replace(
        "access = \"app-password\"\n",
        "access = \"app-password\"\nresource = \"{owner}/{repo}\"\n",
    ) + WEB_ROUTE;
    let pg = Passgate::start(&config);
    let front = Front::start(pg.addr, TRUSTED.parse().unwrap(), "remote-user", "alice");
    let clone = |password: &str, repo: &str, dir: &str| {
        let url = format!("http://alice:{password}@{}/alice/{repo}.git", pg.addr);
        git(
            home,
            home,
            &["clone", "--quiet", &url, home.join(dir).to_str().unwrap()],
        )
    };
    // `password` clones alice/project and gets 403 for alice/other (into
    // project-`n` and other-`n`).
    let only_project = |password: &str, n: u32| {
        let out = clone(password, "project", &format!("project-{n}"));
        assert!(out.status.success(), "clone: {out:?}");
        let out = clone(password, "other", &format!("other-{n}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("403"), "{stderr}");
    };

    block_on(async {
        let Some(browser) = Browser::start().await else {
            return;
        };
        let c = &browser.client;
        c.goto(&front.url(MOUNT)).await.unwrap();
        browser.type_into("#name", "deploy").await;
        browser
            .click("input[name=scope][value='repository:read']")
            .await;
        browser.type_into("#repo", "alice/project").await;
        browser.click("form.create button[type=submit]").await;
        let old = browser.text("#new-password").await;
        assert!(old.starts_with("pgap_") && old.len() == 55, "{old}");
        let old_id = old[5..17].to_owned();
        assert!(browser
            .source()
            .await
            .contains("<code>alice/project</code>"));

        // Real git: the allowed repository clones, the other gets 403.
        only_project(&old, 1);

        // Rotate it on the list page, through the confirmation step.
        c.goto(&front.url(MOUNT)).await.unwrap();
        browser
            .wait_text(&format!("#pw-{old_id} .status"), "active")
            .await;
        browser.click("a[aria-label='Rotate deploy']").await;
        browser.element("#confirm-rotate").await;
        browser.click("#confirm-rotate").await;
        browser.element("#rotated-from").await;
        let new = browser.text("#new-password").await;
        assert!(new.starts_with("pgap_") && new != old, "{new}");
        let new_id = new[5..17].to_owned();
        assert!(browser.text("#rotated-from").await.contains(&old_id));

        // The old password fails at once; the successor works, same limit.
        let out = clone(&old, "project", "project-2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("Authentication failed"), "{stderr}");
        only_project(&new, 3);

        // The list shows the old one replaced, the new one active.
        c.goto(&front.url(MOUNT)).await.unwrap();
        browser
            .wait_text(&format!("#pw-{new_id} .status"), "active")
            .await;
        let list = browser.source().await;
        assert!(
            list.contains(&format!("replaced by <code>{new_id}</code>")),
            "{list}"
        );
        assert!(!list.contains(&new), "the list never shows a secret");
        browser.close().await;
    });
}
