//! The self-service page over real HTTP: sign-in by a trusted header, the
//! security headers, CSRF and origin checks, IDOR, escaping, the create limit,
//! and one attack per test. The browser end to end is in `browser_page`.
//!
//! The trusted SSO proxy is played by requests from 127.0.0.2 (the only
//! address in `trusted_proxies`); everything from 127.0.0.1 is an untrusted
//! client, whatever headers it sends.

use std::net::IpAddr;

use crate::support::*;

pub const MOUNT: &str = "/-/app-passwords";
pub const TRUSTED: &str = "127.0.0.2";

/// `[scopes]` with descriptions, and the page with `root` as admin.
pub fn page_config(upstream: &str) -> ConfigBuilder {
    let mut b = ConfigBuilder::new(upstream);
    b.server_extra = format!("trusted_proxies = [\"{TRUSTED}/32\"]\n");
    b.auth_extra = "max_lifetime = \"90d\"\n".to_owned();
    b.extra.push_str(&format!(
        r#"
[scopes]
"repository:read" = {{ description = "Clone and fetch repositories" }}
"repository:write" = {{ implies = ["repository:read"], description = "Push to repositories" }}

[selfservice]
path = "{MOUNT}"
identity = "header"
user_header = "Remote-User"
admins = ["root"]
default_expiry = "30d"
"#
    ));
    b
}

/// A gateway with the page, in front of an echo backend.
pub struct Site {
    pub pg: Passgate,
    /// Kept alive for the gateway's routes.
    pub _backend: Backend,
}

impl Site {
    pub fn start() -> Site {
        let backend = Backend::start();
        let pg = Passgate::start(&page_config(&backend.url()));
        Site {
            pg,
            _backend: backend,
        }
    }

    fn trusted() -> IpAddr {
        TRUSTED.parse().unwrap()
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.pg.addr)
    }

    /// GET as `user`, through the trusted SSO proxy.
    pub fn get_as(&self, user: &str, target: &str) -> Reply {
        http1_from(
            Self::trusted(),
            self.pg.addr,
            "GET",
            target,
            &[("remote-user", user)],
            b"",
        )
    }

    /// POST a form as `user` from the page's own origin, plus `extra` headers.
    pub fn post_as(&self, user: &str, target: &str, form: &str, extra: &[(&str, &str)]) -> Reply {
        let origin = self.origin();
        let mut headers = vec![
            ("remote-user", user),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if !extra.iter().any(|(k, _)| *k == "origin") {
            headers.push(("origin", &origin));
        }
        headers.extend_from_slice(extra);
        headers.retain(|(_, v)| !v.is_empty());
        http1_from(
            Self::trusted(),
            self.pg.addr,
            "POST",
            target,
            &headers,
            form.as_bytes(),
        )
    }

    /// The CSRF token on `user`'s page.
    pub fn csrf(&self, user: &str) -> String {
        let page = self.get_as(user, MOUNT).text();
        let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
        page[at..at + 64].to_owned()
    }

    /// Creates a password on the page; returns the POST's reply.
    pub fn create(&self, user: &str, name: &str, scopes: &[&str]) -> Reply {
        let mut form = format!("csrf={}&name={}&expires=7d", self.csrf(user), enc(name));
        for s in scopes {
            form.push_str(&format!("&scope={}", enc(s)));
        }
        self.post_as(user, &format!("{MOUNT}/create"), &form, &[])
    }

    /// Creates a password and reads it from its one-time page: (id, password).
    pub fn create_shown(&self, user: &str, name: &str, scopes: &[&str]) -> (String, String) {
        let r = self.create(user, name, scopes);
        assert_eq!(r.status, 303, "{}", r.text());
        let page = self.get_as(user, location(&r)).text();
        let password = between(&page, "<code id=\"new-password\">", "</code>");
        (password[5..17].to_owned(), password)
    }

    pub fn status_of(&self, id: &str) -> String {
        let out = self.pg.cli(&["app-password", "list", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.iter()
            .find(|r| r["id"] == id)
            .map(|r| r["status"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| "missing".into())
    }

    pub fn count(&self) -> usize {
        let out = self.pg.cli(&["app-password", "list", "--json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .len()
    }
}

pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn location(r: &Reply) -> &str {
    r.headers["location"].to_str().unwrap()
}

pub fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} in {text}"))
        + start.len();
    let to = text[from..].find(end).unwrap() + from;
    text[from..to].to_owned()
}

fn assert_secure(r: &Reply, what: &str) {
    let h = |n: &str| {
        r.headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(h("cache-control"), "no-store", "{what}");
    assert_eq!(
        h("content-security-policy"),
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        "{what}"
    );
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
}

#[test]
fn header_identity_is_believed_only_from_a_trusted_proxy() {
    let site = Site::start();
    let ok = site.get_as("alice", MOUNT);
    assert_eq!(ok.status, 200);
    assert!(ok
        .text()
        .contains("<strong id=\"signed-in-user\">alice</strong>"));
    // The same header from an untrusted client is ignored: nobody signed in.
    let r = http1(site.pg.addr, "GET", MOUNT, &[("remote-user", "alice")], b"");
    assert_eq!(r.status, 401);
    assert!(r.text().contains("sign-in"), "{}", r.text());
    assert!(!r.headers.contains_key("www-authenticate"));
    // Trusted, but no header: 401; an unclean name: 400.
    let r = http1_from(
        TRUSTED.parse().unwrap(),
        site.pg.addr,
        "GET",
        MOUNT,
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
    for bad in ["alice:admin", "alice\tx"] {
        assert_eq!(site.get_as(bad, MOUNT).status, 400, "{bad:?}");
    }
}

#[test]
fn the_user_header_from_any_peer_never_reaches_the_backend() {
    let site = Site::start();
    for header in ["Remote-User", "remote_user", "REMOTE-USER"] {
        for from in ["127.0.0.1", TRUSTED] {
            let r = http1_from(
                from.parse().unwrap(),
                site.pg.addr,
                "GET",
                "/some/page",
                &[(header, "root")],
                b"",
            );
            assert_eq!(r.status, 200, "{header} from {from}");
            let echo = r.echo();
            assert!(
                !echo
                    .headers
                    .keys()
                    .any(|k| k.replace('_', "-") == "remote-user"),
                "{header} from {from} forwarded: {:?}",
                echo.headers
            );
        }
    }
    // Nothing under the mount is ever forwarded, not even unknown paths.
    let r = site.get_as("alice", &format!("{MOUNT}/anything/else"));
    assert_eq!(r.status, 404);
    assert!(r.text().contains("<html"), "{}", r.text());
}

#[test]
fn every_page_response_carries_no_store_csp_nosniff_and_no_referrer() {
    let site = Site::start();
    let created = site.create("alice", "laptop", &["repository:read"]);
    let replies = [
        (site.get_as("alice", MOUNT), "list"),
        (
            site.get_as("alice", &format!("{MOUNT}/")),
            "list with slash",
        ),
        (site.get_as("alice", location(&created)), "created page"),
        (
            site.get_as("alice", location(&created)),
            "created page again",
        ),
        (created, "create 303"),
        (
            site.get_as("alice", &format!("{MOUNT}/static/style.css")),
            "css",
        ),
        (
            site.get_as("alice", &format!("{MOUNT}/static/copy.js")),
            "js",
        ),
        (site.get_as("alice", &format!("{MOUNT}/nope")), "404"),
        (http1(site.pg.addr, "GET", MOUNT, &[], b""), "401"),
        (site.get_as("a:b", MOUNT), "400 user"),
        (
            site.post_as("alice", &format!("{MOUNT}/create"), "name=x", &[]),
            "403 csrf",
        ),
        (
            http1_from(
                TRUSTED.parse().unwrap(),
                site.pg.addr,
                "DELETE",
                MOUNT,
                &[("remote-user", "alice")],
                b"",
            ),
            "405",
        ),
        (
            site.get_as("alice", &format!("{MOUNT}/%2e%2e/admin")),
            "400 bad path",
        ),
    ];
    for (r, what) in &replies {
        assert_secure(r, what);
    }
    assert_eq!(replies[1].0.status, 200);
    assert_eq!(replies[3].0.status, 410);
    assert_eq!(replies[11].0.status, 405);
    assert_eq!(replies[12].0.status, 400);
    let css = &replies[5].0;
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[test]
fn post_without_a_wrong_or_another_users_csrf_is_403_and_creates_nothing() {
    let site = Site::start();
    let bobs = site.csrf("bob");
    let alices = site.csrf("alice");
    assert_ne!(bobs, alices);
    let target = format!("{MOUNT}/create");
    let form = |csrf: Option<&str>| {
        let mut f = "name=x&scope=repository%3Aread&expires=7d".to_owned();
        if let Some(c) = csrf {
            f.push_str(&format!("&csrf={c}"));
        }
        f
    };
    let wrong = "0".repeat(64);
    for (csrf, what) in [
        (None, "missing"),
        (Some(""), "empty"),
        (Some(wrong.as_str()), "wrong"),
        (Some(bobs.as_str()), "bob's"),
    ] {
        let r = site.post_as("alice", &target, &form(csrf), &[]);
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    // A repeated csrf field is refused, even when one copy is right.
    let r = site.post_as(
        "alice",
        &target,
        &format!("{}&csrf={wrong}", form(Some(&alices))),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(site.count(), 0);
    // The right one works.
    let r = site.post_as("alice", &target, &form(Some(&alices)), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(site.count(), 1);
}

#[test]
fn cross_origin_posts_are_403_and_change_nothing() {
    let site = Site::start();
    let csrf = site.csrf("alice");
    let target = format!("{MOUNT}/create");
    let form = format!("csrf={csrf}&name=x&scope=repository%3Aread&expires=7d");
    let own_ref = format!("{}/-/app-passwords", site.origin());
    for (headers, what) in [
        (vec![("origin", "http://evil.example")], "evil origin"),
        (
            vec![
                ("origin", "http://evil.example"),
                ("referer", own_ref.as_str()),
            ],
            "evil origin, own referer",
        ),
        (vec![("origin", "")], "neither origin nor referer"),
        (vec![("origin", "null")], "null origin"),
        (
            vec![("origin", "null"), ("sec-fetch-site", "cross-site")],
            "null origin, cross-site",
        ),
        (
            vec![
                ("origin", ""),
                ("referer", "http://evil.example/-/app-passwords"),
            ],
            "evil referer",
        ),
    ] {
        let r = site.post_as("alice", &target, &form, &headers);
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    assert_eq!(site.count(), 0);
    // What browsers send from the page itself under no-referrer is accepted.
    let r = site.post_as(
        "alice",
        &target,
        &form,
        &[("origin", "null"), ("sec-fetch-site", "same-origin")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let r = site.post_as(
        "alice",
        &target,
        &form.replace("name=x", "name=y"),
        &[("origin", ""), ("referer", own_ref.as_str())],
    );
    assert_eq!(r.status, 303, "{}", r.text());
}

#[test]
fn gets_with_action_parameters_change_nothing() {
    let site = Site::start();
    let (id, _) = site.create_shown("alice", "laptop", &["repository:read"]);
    let csrf = site.csrf("alice");
    for target in [
        format!("{MOUNT}/create?csrf={csrf}&name=x&scope=repository%3Aread&expires=7d"),
        format!("{MOUNT}?action=revoke&id={id}&csrf={csrf}"),
        format!("{MOUNT}/revoke?id={id}&csrf={csrf}"),
        format!("{MOUNT}/revoke-all?csrf={csrf}"),
    ] {
        let r = site.get_as("alice", &target);
        assert!([200, 405].contains(&r.status), "{target}: {}", r.status);
    }
    assert_eq!(site.count(), 1);
    assert_eq!(site.status_of(&id), "active");
}

#[test]
fn script_and_quotes_in_a_name_are_escaped_everywhere() {
    let site = Site::start();
    let name = r#"<script>alert("x")</script>"><img src=x onerror=alert(1)>"#;
    let (id, _) = site.create_shown("alice", name, &["repository:read"]);
    for target in [MOUNT.to_owned(), format!("{MOUNT}/revoke?id={id}")] {
        let page = site.get_as("alice", &target).text();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&quot;&gt;&lt;img"),
            "{page}"
        );
    }
    // A re-shown form (duplicate name) escapes what was typed, too.
    let r = site.create("alice", name, &["repository:read"]);
    assert_eq!(r.status, 409);
    assert!(!r.text().contains("<script>alert"), "{}", r.text());
}

#[test]
fn another_users_id_is_404_unless_the_user_is_an_admin() {
    let site = Site::start();
    let (id, _) = site.create_shown("bob", "bobs", &["repository:read"]);
    let csrf = site.csrf("alice");
    let r = site.get_as("alice", &format!("{MOUNT}/revoke?id={id}"));
    assert_eq!(r.status, 404);
    let r = site.post_as(
        "alice",
        &format!("{MOUNT}/revoke"),
        &format!("csrf={csrf}&id={id}"),
        &[],
    );
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("bobs"));
    // Unknown and malformed ids look the same.
    for bad in ["AAAAAAAAAAAA", "x", "%3Cscript%3E"] {
        let r = site.post_as(
            "alice",
            &format!("{MOUNT}/revoke"),
            &format!("csrf={csrf}&id={bad}"),
            &[],
        );
        assert_eq!(r.status, 404, "{bad}");
    }
    // Alice cannot list bob's, nor revoke all of his.
    assert_eq!(
        site.get_as("alice", &format!("{MOUNT}?user=bob")).status,
        403
    );
    let r = site.post_as(
        "alice",
        &format!("{MOUNT}/revoke-all"),
        &format!("csrf={csrf}&user=bob"),
        &[],
    );
    assert_eq!(r.status, 403);
    assert_eq!(site.status_of(&id), "active");

    // An admin sees and revokes it, and lands back on bob's list.
    let list = site.get_as("root", &format!("{MOUNT}?user=bob"));
    assert_eq!(list.status, 200);
    assert!(list.text().contains(&id));
    assert!(!list.text().contains("Create an app password"));
    let r = site.post_as(
        "root",
        &format!("{MOUNT}/revoke"),
        &format!("csrf={}&id={id}", site.csrf("root")),
        &[],
    );
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), format!("{MOUNT}?user=bob"));
    assert_eq!(site.status_of(&id), "revoked");
    assert!(site.pg.wait_log(
        &format!("reason=\"web\" event=\"revoked\" id={id} user=\"bob\" by=\"root\" via=\"web\""),
        std::time::Duration::from_secs(5)
    ));
}

#[test]
fn an_app_password_or_basic_credentials_on_the_page_get_403() {
    let site = Site::start();
    let (_, pw) = site
        .pg
        .create_expiring("alice", "cli", &["repository:read"], "7d");
    let trusted: IpAddr = TRUSTED.parse().unwrap();
    let bearer = format!("Bearer {pw}");
    let basic_pw = basic("alice", &pw);
    let basic_plain = basic("alice", "hunter2");
    let query = format!("{MOUNT}?token={pw}");
    for (target, headers, what) in [
        (
            MOUNT,
            vec![("authorization", basic_pw.as_str())],
            "basic app password",
        ),
        (
            MOUNT,
            vec![("authorization", basic_plain.as_str())],
            "basic password",
        ),
        (
            MOUNT,
            vec![("authorization", bearer.as_str())],
            "bearer app password",
        ),
        (MOUNT, vec![("private-token", pw.as_str())], "other header"),
        (query.as_str(), vec![], "query"),
    ] {
        let mut h = headers.clone();
        h.push(("remote-user", "alice"));
        let r = http1_from(trusted, site.pg.addr, "GET", target, &h, b"");
        assert_eq!(r.status, 403, "{what}");
        assert_secure(&r, what);
        assert!(r.text().contains("cannot be used on this page"), "{what}");
    }
}

#[test]
fn the_eleventh_creation_in_an_hour_gets_429_and_creates_nothing() {
    let site = Site::start();
    for i in 0..10 {
        let r = site.create("alice", &format!("pw{i}"), &["repository:read"]);
        assert_eq!(r.status, 303, "{i}: {}", r.text());
    }
    // Revoking does not give the hour's budget back.
    let csrf = site.csrf("alice");
    let r = site.post_as(
        "alice",
        &format!("{MOUNT}/revoke-all"),
        &format!("csrf={csrf}"),
        &[],
    );
    assert_eq!(r.status, 303);
    let r = site.create("alice", "one-too-many", &["repository:read"]);
    assert_eq!(r.status, 429);
    assert!(r.text().contains("last hour"), "{}", r.text());
    assert!(r.text().contains("value=\"one-too-many\""));
    assert_eq!(site.count(), 10);
    // Another user has their own budget.
    assert_eq!(site.create("bob", "bobs", &["repository:read"]).status, 303);
}

#[test]
fn a_bad_form_is_shown_again_with_the_message_and_creates_nothing() {
    let site = Site::start();
    let csrf = site.csrf("alice");
    let target = format!("{MOUNT}/create");
    let cases = [
        ("name=x&expires=7d", 400, "choose at least one scope"),
        ("name=x&scope=nope%3Aread&expires=7d", 400, "unknown scope"),
        (
            "name=&scope=repository%3Aread&expires=7d",
            400,
            "invalid name",
        ),
        (
            "name=x&scope=repository%3Aread&expires=never",
            400,
            "must expire within",
        ),
        (
            "name=x&scope=repository%3Aread&expires=365d",
            400,
            "exceeds",
        ),
        (
            "name=x&scope=repository%3Aread&expires=date&expires_on=2001-01-01",
            400,
            "in the future",
        ),
        (
            "name=x&scope=repository%3Aread&expires=date&expires_on=tomorrow",
            400,
            "YYYY-MM-DD",
        ),
    ];
    for (form, status, message) in cases {
        let r = site.post_as("alice", &target, &format!("csrf={csrf}&{form}"), &[]);
        assert_eq!(r.status, status, "{form}: {}", r.text());
        let text = r.text();
        assert!(text.contains("id=\"form-error\""), "{form}");
        assert!(text.contains(message), "{form}: {text}");
        assert!(text.contains("<form class=\"create\""), "{form}");
    }
    assert_eq!(site.count(), 0);
    // A duplicate name: 409, the typed values kept.
    site.create_shown("alice", "laptop", &["repository:read"]);
    let r = site.create("alice", "laptop", &["repository:write"]);
    assert_eq!(r.status, 409);
    assert!(r.text().contains("already have an active app password"));
    assert!(
        r.text().contains("value=\"repository:write\" checked"),
        "{}",
        r.text()
    );
    assert_eq!(site.count(), 1);
}

#[test]
fn a_created_password_is_shown_once_works_and_revoking_it_stops_it_at_once() {
    let site = Site::start();
    let r = site.create("alice", "laptop", &["repository:read"]);
    assert_eq!(r.status, 303);
    let page = site.get_as("alice", location(&r));
    assert_eq!(page.status, 200);
    let text = page.text();
    let pw = between(&text, "<code id=\"new-password\">", "</code>");
    assert!(pw.starts_with("pgap_") && pw.len() == 55, "{pw}");
    assert!(text.contains(&format!("git clone http://alice@{}/", site.pg.addr)));
    // Only the user who made it may see it, and only once.
    let other = site.get_as("bob", location(&r));
    assert_eq!(other.status, 410);
    assert!(!other.text().contains(&pw));
    assert_eq!(site.get_as("alice", location(&r)).status, 410);
    // It works on an app-password route (created through manage, committed).
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &pw))).status,
        200
    );
    let id = pw[5..17].to_owned();
    assert!(site.pg.wait_log(
        &format!("peer=127.0.0.2 reason=\"web\" event=\"created\" id={id} user=\"alice\" name=\"laptop\" scopes=repository:read via=\"web\""),
        std::time::Duration::from_secs(5)
    ));
    // Revoke through the confirmation page's form.
    let confirm = site
        .get_as("alice", &format!("{MOUNT}/revoke?id={id}"))
        .text();
    assert!(confirm.contains("id=\"confirm-revoke\""), "{confirm}");
    let csrf = between(&confirm, "name=\"csrf\" value=\"", "\"");
    let r = site.post_as(
        "alice",
        &format!("{MOUNT}/revoke"),
        &format!("csrf={csrf}&id={id}"),
        &[],
    );
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), MOUNT);
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &pw))).status,
        401
    );
    let list = site.get_as("alice", MOUNT).text();
    assert!(list.contains("status-revoked"), "{list}");
}

#[test]
fn check_config_lists_the_page_first_and_refuses_a_bad_selfservice_block() {
    let backend = Backend::start();
    let pg = Passgate::start(&page_config(&backend.url()));
    let out = pg.cli(&["check-config"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().nth(1).unwrap();
    assert!(
        first.contains("selfservice") && first.contains(MOUNT),
        "{stdout}"
    );

    let base = page_config(&backend.url()).render();
    for (from, to, message) in [
        (
            "trusted_proxies = [\"127.0.0.2/32\"]",
            "",
            "needs server.trusted_proxies",
        ),
        (
            "identity = \"header\"",
            "identity = \"oidc\"",
            "selfservice.oidc",
        ),
        (
            &format!("path = \"{MOUNT}\""),
            "path = \"/\"",
            "selfservice.path",
        ),
        (
            &format!("path = \"{MOUNT}\""),
            "path = \"/a/../b\"",
            "selfservice.path",
        ),
        (
            "user_header = \"Remote-User\"",
            "user_header = \"Authorization\"",
            "selfservice.user_header",
        ),
        (
            "default_expiry = \"30d\"",
            "default_expiry = \"never\"",
            "max_lifetime",
        ),
        (
            "admins = [\"root\"]",
            "admins = [\"a:b\"]",
            "selfservice.admins",
        ),
        ("admins = [\"root\"]", "admin = [\"root\"]", "unknown field"),
    ] {
        assert_eq!(base.matches(from).count(), 1, "{from}");
        let text = base.replace(from, to);
        let path = pg.dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{from} -> {to}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{from} -> {to}: {stderr}");
    }
}

#[test]
fn every_input_on_the_page_has_a_label_and_the_one_time_page_survives_a_head() {
    let site = Site::start();
    site.create_shown("alice", "laptop", &["repository:read"]);
    let page = site.get_as("alice", MOUNT).text();
    let mut inputs = 0;
    for tag in page
        .split('<')
        .filter(|t| t.starts_with("input ") || t.starts_with("select "))
    {
        if tag.contains("type=\"hidden\"") {
            continue;
        }
        inputs += 1;
        let id = between(tag, "id=\"", "\"");
        assert!(
            page.contains(&format!("<label for=\"{id}\""))
                || page.contains(&format!("for=\"{id}\">")),
            "no label for {id}"
        );
    }
    assert!(inputs >= 5, "{inputs} inputs");
    // A HEAD of the one-time page does not use up its one showing.
    let r = site.create("alice", "second", &["repository:read"]);
    let head = http1_from(
        TRUSTED.parse().unwrap(),
        site.pg.addr,
        "HEAD",
        location(&r),
        &[("remote-user", "alice")],
        b"",
    );
    assert_eq!(head.status, 405);
    let shown = site.get_as("alice", location(&r));
    assert_eq!(shown.status, 200);
    assert!(shown.text().contains("id=\"new-password\""));
}

/// Creates a password with limits typed into the form's textareas.
fn create_limited(site: &Site, user: &str, name: &str, repo: &str, allow_from: &str) -> Reply {
    let form = format!(
        "csrf={}&name={}&expires=7d&scope=repository%3Aread&repo={}&allow_from={}",
        site.csrf(user),
        enc(name),
        enc(repo),
        enc(allow_from)
    );
    site.post_as(user, &format!("{MOUNT}/create"), &form, &[])
}

/// The successor's password from a rotation's one-time page.
fn rotate_shown(site: &Site, user: &str, id: &str, grace: &str) -> String {
    let confirm = site.get_as(user, &format!("{MOUNT}/rotate?id={id}"));
    assert_eq!(confirm.status, 200, "{}", confirm.text());
    let confirm = confirm.text();
    assert!(confirm.contains("id=\"confirm-rotate\""), "{confirm}");
    let csrf = between(&confirm, "name=\"csrf\" value=\"", "\"");
    let r = site.post_as(
        user,
        &format!("{MOUNT}/rotate"),
        &format!("csrf={csrf}&id={id}&grace={grace}"),
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let page = site.get_as(user, location(&r)).text();
    assert!(
        page.contains(&format!("replaces app password <code>{id}</code>")),
        "{page}"
    );
    between(&page, "<code id=\"new-password\">", "</code>")
}

#[test]
fn limits_typed_one_per_line_are_kept_and_listed() {
    let site = Site::start();
    let r = create_limited(
        &site,
        "alice",
        "deploy",
        "alice/site\r\n\r\n  alice/docs  \r\nbob/*",
        "10.0.0.0/8\r\n127.0.0.1",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let page = site.get_as("alice", location(&r)).text();
    let pw = between(&page, "<code id=\"new-password\">", "</code>");
    let id = pw[5..17].to_owned();
    for shown in [
        "alice/site",
        "alice/docs",
        "bob/*",
        "10.0.0.0/8",
        "127.0.0.1/32",
    ] {
        assert!(
            page.contains(&format!("<code>{shown}</code>")),
            "{shown}: {page}"
        );
    }
    let out = site.pg.cli(&["app-password", "show", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["repos"],
        serde_json::json!(["alice/docs", "alice/site", "bob/*"])
    );
    assert_eq!(
        v["allow_from"],
        serde_json::json!(["10.0.0.0/8", "127.0.0.1/32"])
    );
    // The list shows them on the password's row.
    let list = site.get_as("alice", MOUNT).text();
    let row = between(&list, &format!("<tr id=\"pw-{id}\">"), "</tr>");
    assert!(row.contains("<code>bob/*</code>"), "{row}");
    assert!(row.contains("<code>10.0.0.0/8</code>"), "{row}");
    // The default routes name no repository: a limited password is refused
    // there with 403, which shows the limit is enforced.
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &pw))).status,
        403
    );
}

#[test]
fn a_bad_repository_or_network_is_a_400_naming_the_field_and_creates_nothing() {
    let site = Site::start();
    let cases = [
        ("a b", "", "repo", "Repositories (repo)"),
        ("alice/site.git", "", "repo", "without &quot;.git&quot;"),
        ("alice", "", "repo", "Repositories (repo)"),
        (
            "",
            "10.0.0.0/33",
            "allow_from",
            "Allowed networks (allow_from)",
        ),
        (
            "alice/a",
            "not-a-net",
            "allow_from",
            "Allowed networks (allow_from)",
        ),
    ];
    for (repo, net, field, message) in cases {
        let r = create_limited(&site, "alice", "ci", repo, net);
        assert_eq!(r.status, 400, "{repo:?} {net:?}: {}", r.text());
        let text = r.text();
        assert!(text.contains("id=\"form-error\""), "{text}");
        assert!(text.contains(message), "{message}: {text}");
        // The form is shown again, the bad field marked, what was typed kept.
        assert!(text.contains("<form class=\"create\""), "{text}");
        assert!(text.contains(&format!("name=\"{field}\" rows=")), "{text}");
        let marked = between(&text, &format!("id=\"{field}\""), ">");
        assert!(
            marked.contains("aria-invalid=\"true\""),
            "{field}: {marked}"
        );
        assert!(text.contains("value=\"ci\""), "{text}");
    }
    assert_eq!(site.count(), 0);
}

#[test]
fn script_in_the_repository_field_is_escaped_everywhere() {
    let site = Site::start();
    // A valid OWNER/NAME to the parser, and markup to a careless page.
    let repo = "<script>alert(1)</script>";
    let r = create_limited(&site, "alice", "x\"><b>", repo, "");
    assert_eq!(r.status, 303, "{}", r.text());
    let shown = site.get_as("alice", location(&r)).text();
    let list = site.get_as("alice", MOUNT).text();
    for page in [&shown, &list] {
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
    }
    // Re-shown after an error (a bad network), the typed text stays escaped.
    let r = create_limited(
        &site,
        "alice",
        "y",
        "</textarea><script>alert(2)</script>",
        "x",
    );
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("<script>alert(2)"), "{}", r.text());
    assert!(r.text().contains("&lt;/textarea&gt;&lt;script&gt;alert(2)"));
}

#[test]
fn rotating_on_the_page_replaces_the_password_and_shows_the_successor_once() {
    let site = Site::start();
    let r = create_limited(&site, "alice", "deploy", "", "127.0.0.0/8");
    let page = site.get_as("alice", location(&r)).text();
    let old = between(&page, "<code id=\"new-password\">", "</code>");
    let id = old[5..17].to_owned();
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &old))).status,
        200
    );
    let list = site.get_as("alice", MOUNT).text();
    assert!(
        list.contains(&format!("href=\"{MOUNT}/rotate?id={id}\"")),
        "{list}"
    );

    let new = rotate_shown(&site, "alice", &id, "0");
    assert!(new.starts_with("pgap_") && new != old, "{new}");
    let new_id = new[5..17].to_owned();
    // At once: the old one stops (cached before), the successor works and
    // kept the limit.
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &old))).status,
        401
    );
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &new))).status,
        200
    );
    let out = site.pg.cli(&["app-password", "show", &new_id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rotated_from"], id.as_str());
    assert_eq!(v["name"], "deploy");
    assert_eq!(v["allow_from"], serde_json::json!(["127.0.0.0/8"]));
    assert!(site.pg.wait_log(
        &format!(
            "peer=127.0.0.2 reason=\"web\" event=\"rotated\" id={id} successor={new_id} user=\"alice\" name=\"deploy\" via=\"web\""
        ),
        std::time::Duration::from_secs(5)
    ));
    // A rotated-away password cannot be rotated again: 409, nothing made.
    let csrf = site.csrf("alice");
    let count = site.count();
    let r = site.post_as(
        "alice",
        &format!("{MOUNT}/rotate"),
        &format!("csrf={csrf}&id={id}&grace=0"),
        &[],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("already rotated"), "{}", r.text());
    assert_eq!(site.count(), count);

    // With a grace, the old one works until then and the list says so.
    let third = rotate_shown(&site, "alice", &new_id, "1h");
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &new))).status,
        200
    );
    assert_eq!(
        get(site.pg.addr, "/api/x", Some(("alice", &third))).status,
        200
    );
    let list = site.get_as("alice", MOUNT).text();
    let row = between(&list, &format!("<tr id=\"pw-{new_id}\">"), "</tr>");
    assert!(row.contains("replaced by"), "{row}");
    assert!(row.contains("stops"), "{row}");
    assert!(!row.contains("/rotate?id="), "{row}");
    // A grace the page does not offer is refused.
    let r = site.post_as(
        "alice",
        &format!("{MOUNT}/rotate"),
        &format!("csrf={csrf}&id={}&grace=100y", &third[5..17]),
        &[],
    );
    assert_eq!(r.status, 400);
}

#[test]
fn rotating_needs_the_csrf_token_and_ones_own_password() {
    let site = Site::start();
    let (id, pw) = site.create_shown("bob", "bobs", &["repository:read"]);
    let count = site.count();
    let target = format!("{MOUNT}/rotate");
    // No token, a wrong one, another user's, another origin: 403.
    let wrong = "0".repeat(64);
    let bobs = site.csrf("bob");
    for form in [
        format!("id={id}&grace=0"),
        format!("csrf={wrong}&id={id}&grace=0"),
        format!("csrf={}&id={id}&grace=0", site.csrf("alice")),
    ] {
        let r = site.post_as("bob", &target, &form, &[]);
        assert_eq!(r.status, 403, "{form}: {}", r.text());
    }
    let r = site.post_as(
        "bob",
        &target,
        &format!("csrf={bobs}&id={id}&grace=0"),
        &[("origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403);
    // Another user's password: 404, for an admin too (nobody creates a
    // password for someone else), on the confirmation page and the POST.
    for user in ["alice", "root"] {
        assert_eq!(
            site.get_as(user, &format!("{MOUNT}/rotate?id={id}")).status,
            404,
            "{user}"
        );
        let r = site.post_as(
            user,
            &target,
            &format!("csrf={}&id={id}&grace=0", site.csrf(user)),
            &[],
        );
        assert_eq!(r.status, 404, "{user}: {}", r.text());
        assert!(!r.text().contains("pgap_"), "{}", r.text());
    }
    // A GET never rotates.
    assert_eq!(
        site.get_as("bob", &format!("{target}?id={id}&grace=0&csrf={bobs}"))
            .status,
        200
    );
    assert_eq!(site.count(), count);
    assert_eq!(site.status_of(&id), "active");
    assert_eq!(get(site.pg.addr, "/api/x", Some(("bob", &pw))).status, 200);
    // An admin's list of bob's passwords offers no Rotate button.
    let list = site.get_as("root", &format!("{MOUNT}?user=bob")).text();
    assert!(list.contains(&id));
    assert!(!list.contains("/rotate?id="), "{list}");
}
