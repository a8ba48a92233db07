//! The page's OIDC sign-in through the real binary, at the HTTP level: the
//! redirect to the provider, the callback, the session cookie, sign-out,
//! step-up, and the callbacks an attacker can forge or replay.

use std::time::Duration;

use super::provider::{Agent, Provider};
use bytes::Bytes;
use http_body_util::Full;

use crate::support::{
    block_on, git_cli_routes, tls_request, Backend, Certs, ConfigBuilder, Passgate, Reply,
};

const MOUNT: &str = "/-/app-passwords";

/// A gateway whose page signs in at `provider`.
pub struct Site {
    pub provider: Provider,
    pub gw: Passgate,
    _backend: Backend,
}

impl Site {
    pub fn start(test: &str, oidc_extra: &str) -> Option<Site> {
        Site::start_with(test, oidc_extra, |_, _| {})
    }

    /// As [`Site::start`], with a hook to change the config (TLS).
    pub fn start_with(
        test: &str,
        oidc_extra: &str,
        change: impl FnOnce(&std::path::Path, &mut ConfigBuilder),
    ) -> Option<Site> {
        // The gateway's callback is registered once its port is known.
        let provider = Provider::start(test, &["http://127.0.0.1:9/-/not-yet"])?;
        let backend = Backend::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("oidc-secret"),
            super::provider::CLIENT_SECRET,
        )
        .unwrap();
        let mut builder = ConfigBuilder::new(&backend.url());
        change(dir.path(), &mut builder);
        builder.extra.push_str(&format!(
            "\n[selfservice]\npath = \"{MOUNT}\"\nidentity = \"oidc\"\n\n[selfservice.oidc]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"oidc-secret\"\n{oidc_extra}\n",
            provider.issuer,
            super::provider::CLIENT_ID,
        ));
        let gw = Passgate::start_in(dir, &builder);
        let site = Site {
            provider,
            gw,
            _backend: backend,
        };
        site.register();
        Some(site)
    }

    /// Registers this gateway's callback at the provider (its port changes
    /// on a restart).
    pub fn register(&self) {
        let uri = format!("http://{}{MOUNT}/callback", self.gw.addr);
        block_on(self.provider.allow_redirect(&uri));
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.gw.addr)
    }

    /// Signs `user` in with a fresh browser; returns it, signed in.
    pub async fn signed_in(&self, user: &str) -> Agent {
        let mut agent = Agent::default();
        let callback = self.to_callback(&mut agent, user).await;
        let r = agent.get(self.gw.addr, &callback).await;
        assert_eq!(r.status, 200, "{}", r.text());
        agent
    }

    /// Opens the page, signs in at the provider; the callback target
    /// (path and query) the provider sent the browser to.
    pub async fn to_callback(&self, agent: &mut Agent, user: &str) -> String {
        let r = agent.get(self.gw.addr, MOUNT).await;
        assert_eq!(r.status, 302, "{}", r.text());
        let to = r.headers["location"].to_str().unwrap().to_owned();
        self.sign_in_at_provider(agent, &to, user).await
    }

    /// Signs `user` in at the provider from `to` (where the gateway sent the
    /// browser: a redirect, the step-up link); the callback target (path and
    /// query on this gateway) the provider sends the browser back to.
    pub async fn sign_in_at_provider(&self, agent: &mut Agent, to: &str, user: &str) -> String {
        let cb = agent.sign_in(&self.provider, to, user).await;
        cb.url.strip_prefix(&self.origin()).unwrap().to_owned()
    }

    pub async fn post(&self, agent: &mut Agent, action: &str, body: &str) -> Reply {
        let origin = self.origin();
        agent
            .post_with(
                self.gw.addr,
                &format!("{MOUNT}{action}"),
                body,
                &[("origin", &origin)],
            )
            .await
    }
}

pub fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

pub fn set_cookie(r: &Reply, name: &str) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.headers))
}

#[test]
fn oidc_page_signs_in_keeps_a_session_and_signs_out() {
    let Some(site) = Site::start("oidc_page_signs_in_keeps_a_session_and_signs_out", "") else {
        return;
    };
    block_on(async {
        let mut agent = Agent::default();
        let r = agent.get(site.gw.addr, MOUNT).await;
        assert_eq!(r.status, 302);
        let to = r.headers["location"].to_str().unwrap();
        assert!(to.starts_with(&site.provider.issuer), "{to}");
        for param in [
            "code_challenge_method=S256",
            "state=",
            "nonce=",
            "redirect_uri=",
        ] {
            assert!(to.contains(param), "{param} missing in {to}");
        }
        let login = set_cookie(&r, "passgate-login");
        assert!(
            login.contains("HttpOnly") && login.contains("SameSite=Lax"),
            "{login}"
        );
        assert!(!login.contains("Secure"), "plain HTTP on loopback: {login}");
        let target = site.sign_in_at_provider(&mut agent, to, "alice").await;
        assert!(
            target.starts_with(&format!("{MOUNT}/callback?")),
            "{target}"
        );
        let used_login = agent.cookie("passgate-login").unwrap();
        let r = agent.get(site.gw.addr, &target).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers["cache-control"], "no-store");
        let session = set_cookie(&r, "passgate");
        let id = session
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("passgate=")
            .unwrap();
        assert_eq!(id.len(), 43, "256 bits, base64url: {session}");
        assert!(
            session.ends_with("; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict"),
            "{session}"
        );
        assert!(
            site.gw
                .wait_log("event=\"signed_in\"", Duration::from_secs(5))
                || site.gw.wait_log("signed_in", Duration::from_secs(1))
        );

        let page = agent.get(site.gw.addr, MOUNT).await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.text().contains("alice"), "{}", page.text());

        // The same answer again, with the same pre-login cookie: used up.
        let mut replay = Agent::default();
        replay.set_cookie("passgate-login", &used_login);
        let r = replay.get(site.gw.addr, &target).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r
            .headers
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().starts_with("passgate=")));

        // A made-up session id is nobody.
        let mut forged = Agent::default();
        forged.set_cookie("passgate", &"A".repeat(43));
        assert_eq!(forged.get(site.gw.addr, MOUNT).await.status, 302);

        // Sign out (a CSRF-checked POST): the session is gone from the store.
        let token = csrf(&page.text());
        let r = site.post(&mut agent, "/logout", "csrf=bad").await;
        assert_eq!(r.status, 403, "{}", r.text());
        let r = site
            .post(&mut agent, "/logout", &format!("csrf={token}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("Signed out"));
        let mut old = Agent::default();
        old.set_cookie("passgate", id);
        assert_eq!(old.get(site.gw.addr, MOUNT).await.status, 302);
    });
}

#[test]
fn oidc_page_callback_is_bound_to_the_browser_that_started_it() {
    let Some(site) = Site::start("oidc_page_callback_is_bound_to_the_browser", "") else {
        return;
    };
    block_on(async {
        let mut alice = Agent::default();
        let target = site.to_callback(&mut alice, "alice").await;
        // The attacker started their own sign-in (their own pre-login
        // cookie) and feeds alice's answer into their browser: refused.
        let mut attacker = Agent::default();
        assert_eq!(attacker.get(site.gw.addr, MOUNT).await.status, 302);
        let r = attacker.get(site.gw.addr, &target).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("state"), "{}", r.text());
        // No pre-login cookie at all.
        let r = Agent::default().get(site.gw.addr, &target).await;
        assert_eq!(r.status, 400, "{}", r.text());
        // Alice's own browser still completes (her record was untouched).
        assert_eq!(alice.get(site.gw.addr, &target).await.status, 200);
        // The provider says the user cancelled.
        let mut cancel = Agent::default();
        assert_eq!(cancel.get(site.gw.addr, MOUNT).await.status, 302);
        let r = cancel
            .get(
                site.gw.addr,
                &format!("{MOUNT}/callback?error=access_denied&state=x"),
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(site.gw.wait_log("sign_in_failed", Duration::from_secs(5)));
    });
}

#[test]
fn oidc_page_forged_id_token_signs_nobody_in() {
    let Some(site) = Site::start("oidc_page_forged_id_token_signs_nobody_in", "") else {
        return;
    };
    block_on(async {
        let mut agent = Agent::default();
        let target = site.to_callback(&mut agent, "alice").await;
        site.provider.tamper("nonce").await;
        let r = agent.get(site.gw.addr, &target).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.text().contains("ID token"), "{}", r.text());
        assert!(r
            .headers
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("passgate=")));
        assert_eq!(agent.get(site.gw.addr, MOUNT).await.status, 302);
    });
}

#[test]
fn oidc_page_allowed_groups_refuses_others() {
    let Some(site) = Site::start("oidc_page_allowed_groups", "allowed_groups = [\"devs\"]") else {
        return;
    };
    block_on(async {
        let mut bob = Agent::default();
        let target = site.to_callback(&mut bob, "bob").await;
        let r = bob.get(site.gw.addr, &target).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("bob"), "{}", r.text());
        let _alice = site.signed_in("alice").await;
    });
}

#[test]
fn oidc_page_sessions_survive_a_restart_and_csrf_is_per_session() {
    let Some(mut site) = Site::start("oidc_page_sessions_survive_a_restart", "") else {
        return;
    };
    block_on(async {
        let mut alice = site.signed_in("alice").await;
        let mut bob = site.signed_in("bob").await;
        let alice_csrf = csrf(&alice.get(site.gw.addr, MOUNT).await.text());
        // Bob's session with alice's form token: refused, nothing created.
        let body = format!("csrf={alice_csrf}&name=x&scope=repository%3Aread&expires=7d");
        let r = site.post(&mut bob, "/create", &body).await;
        assert_eq!(r.status, 403, "{}", r.text());
        // A restart keeps the session (it is in the store).
        site.gw.kill9();
        site.gw.spawn();
        let uri = format!("http://{}{MOUNT}/callback", site.gw.addr);
        site.provider.allow_redirect(&uri).await;
        let page = alice.get(site.gw.addr, MOUNT).await;
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.text().contains("alice"));
    });
}

#[test]
fn oidc_check_config_refuses_unsafe_or_incomplete_settings() {
    // No node needed: check-config does not contact the issuer.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oidc-secret"), "s3cret").unwrap();
    let good = "[selfservice]\nidentity = \"oidc\"\n\n[selfservice.oidc]\nissuer = \"https://git.example.com/\"\nclient_id = \"passgate\"\nclient_secret_file = \"oidc-secret\"\n";
    let check = |selfservice: &str, listen: &str| {
        let mut builder = ConfigBuilder::new("http://127.0.0.1:9");
        builder.extra.push_str(selfservice);
        let text = builder.render().replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [{listen}]"),
        );
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(crate::support::BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check(good, "\"127.0.0.1:0\"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("identity oidc https://git.example.com/"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (selfservice, listen, message) in [
        // Session cookies in clear over a network: refused.
        (good.to_owned(), "\"0.0.0.0:8080\"", "selfservice.identity"),
        (
            good.replace("https://git.example.com/", "http://git.example.com/"),
            "\"127.0.0.1:0\"",
            "selfservice.oidc.issuer",
        ),
        (
            good.replace("oidc-secret\"", "missing-secret\""),
            "\"127.0.0.1:0\"",
            "selfservice.oidc.client_secret_file",
        ),
        (
            format!("{good}reauth_after = \"soon\"\n"),
            "\"127.0.0.1:0\"",
            "selfservice.oidc.reauth_after",
        ),
        (
            format!("{good}scopes = [\"x\"]\n"),
            "\"127.0.0.1:0\"",
            "unknown field",
        ),
        (
            good.replace(
                "identity = \"oidc\"\n",
                "identity = \"oidc\"\nuser_header = \"Remote-User\"\n",
            ),
            "\"127.0.0.1:0\"",
            "selfservice.user_header",
        ),
    ] {
        let out = check(&selfservice, listen);
        assert_eq!(out.status.code(), Some(2), "{selfservice}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{message}: {stderr}");
    }
}

#[test]
fn oidc_page_over_tls_uses_host_prefixed_secure_cookies() {
    let certs = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = certs.clone();
    let Some(site) = Site::start_with("oidc_page_over_tls", "", move |dir, b| {
        let c = Certs::generate(dir, "localhost");
        b.tls = Some((c.cert_path.clone(), c.key_path.clone()));
        *keep.lock().unwrap() = Some(c);
    }) else {
        return;
    };
    let certs = certs.lock().unwrap().take().unwrap();
    let host = format!("localhost:{}", site.gw.addr.port());
    block_on(async {
        site.provider
            .allow_redirect(&format!("https://{host}{MOUNT}/callback"))
            .await;
        let get = |target: &str, cookie: Option<String>| {
            let mut req = http::Request::get(target).header("host", &host);
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            tls_request(
                site.gw.addr,
                &certs,
                &[b"http/1.1"],
                req.body(Full::new(Bytes::new())).unwrap(),
            )
        };
        let r = get(MOUNT, None).await;
        assert_eq!(r.status, 302, "{}", r.text());
        let login = set_cookie(&r, "__Host-passgate-login");
        assert!(
            login.ends_with("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure"),
            "{login}"
        );
        let login = login.split(';').next().unwrap().to_owned();
        let to = r.headers["location"].to_str().unwrap().to_owned();
        let cb = Agent::default().sign_in(&site.provider, &to, "alice").await;
        let target = cb
            .url
            .strip_prefix(&format!("https://{host}"))
            .unwrap()
            .to_owned();
        // Over TLS a plain-named pre-login cookie (one a sibling domain or
        // plain HTTP could plant: login CSRF) is no sign-in in progress.
        let planted = login.replace("__Host-passgate-login=", "passgate-login=");
        let r = get(&target, Some(planted)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let r = get(&target, Some(login)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let session = set_cookie(&r, "__Host-passgate");
        assert!(
            session.ends_with("; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure"),
            "{session}"
        );
        let id = session
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("__Host-passgate=")
            .unwrap()
            .to_owned();
        let r = get(MOUNT, Some(format!("__Host-passgate={id}"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("alice"));
        // Over TLS only the __Host- cookie counts (a plain-named copy could
        // have been planted over HTTP or by a sibling domain).
        let r = get(MOUNT, Some(format!("passgate={id}"))).await;
        assert_eq!(r.status, 302, "{}", r.text());
    });
}

#[test]
fn oidc_page_issuer_down_is_a_clear_502_that_signs_nobody_in() {
    let Some(mut site) = Site::start("oidc_page_issuer_down", "") else {
        return;
    };
    site.provider.stop();
    block_on(async {
        let r = Agent::default().get(site.gw.addr, MOUNT).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("unreachable"), "{}", r.text());
        assert!(r.headers.get("set-cookie").is_none());
    });
    assert!(site.gw.wait_log("sign_in_failed", Duration::from_secs(5)));
}

/// A `git http-backend` with `alice/project.git` holding one commit (a
/// README), a work dir, and a git runner with a clean environment.
pub fn seeded_git() -> (
    crate::cgi::GitServer,
    tempfile::TempDir,
    impl Fn(&std::path::Path, &[&str]),
) {
    let git = crate::cgi::GitServer::start();
    let bare = git.bare_repo("alice", "project");
    let work = tempfile::tempdir().unwrap();
    let home = work.path().to_owned();
    let run = move |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let seed = work.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    run(&seed, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(seed.join("README"), "hello from oidc\n").unwrap();
    run(&seed, &["add", "README"]);
    run(
        &seed,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "--quiet",
            "-m",
            "seed",
        ],
    );
    run(&seed, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
    (git, work, run)
}

/// Clones alice/project through `site` with `password` (no credential
/// helper to fall back on) into `work/clone`; the clone's README.
pub fn clone_readme(
    site: &Site,
    work: &tempfile::TempDir,
    run: impl Fn(&std::path::Path, &[&str]),
    password: &str,
) -> String {
    let url = format!("http://alice:{password}@{}/alice/project.git", site.gw.addr);
    let args = [
        "-c",
        "credential.helper=",
        "clone",
        "--quiet",
        &url,
        "clone",
    ];
    run(work.path(), &args);
    std::fs::read_to_string(work.path().join("clone/README")).unwrap()
}

#[test]
fn oidc_page_password_clones_with_the_real_git_cli() {
    let (git, work, run) = seeded_git();
    let upstream = git.url();
    let Some(site) = Site::start_with("oidc_page_password_clones_with_git", "", move |_, b| {
        b.upstream = upstream;
        b.routes = git_cli_routes();
    }) else {
        return;
    };
    let password = block_on(async {
        let mut agent = site.signed_in("alice").await;
        let token = csrf(&agent.get(site.gw.addr, MOUNT).await.text());
        let body = format!("csrf={token}&name=laptop-git&scope=repository%3Aread&expires=7d");
        let r = site.post(&mut agent, "/create", &body).await;
        assert_eq!(r.status, 303, "{}", r.text());
        let shown = r.headers["location"].to_str().unwrap().to_owned();
        let page = agent.get(site.gw.addr, &shown).await.text();
        let start = page
            .find("<code id=\"new-password\">")
            .expect("new password")
            + 24;
        page[start..start + page[start..].find('<').unwrap()].to_owned()
    });
    assert_eq!(
        clone_readme(&site, &work, run, &password),
        "hello from oidc\n"
    );
}
