//! The real OpenID provider the OIDC tests sign in against: node
//! `oidc-provider` 8.8.1 (tests/oidc/provider.mjs), started on a free
//! loopback port, plus a browser-less user agent that fills in its login and
//! consent forms over HTTP.
//!
//! Node is part of the browser toolchain: without `node` or without
//! `npm ci --prefix tests/oidc` having run, [`Provider::start`] prints a
//! notice and returns `None` (the test skips), unless
//! `PASSGATE_REQUIRE_BROWSER=1` is set (CI), where it panics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::support::{http1_async_from, Reply};

pub const CLIENT_ID: &str = "passgate";
pub const CLIENT_SECRET: &str = "passgate-test-secret";

/// A running provider; killed on drop.
pub struct Provider {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub issuer: String,
    pub addr: SocketAddr,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether node and the provider's packages are here; prints the skip
/// notice (or panics under `PASSGATE_REQUIRE_BROWSER=1`) when not.
pub fn available(test: &str) -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let modules = dir()
        .join("node_modules/oidc-provider/package.json")
        .exists();
    if node && modules {
        return true;
    }
    let why = if node {
        "tests/oidc/node_modules is missing (run `npm ci --prefix tests/oidc`)"
    } else {
        "node is not installed"
    };
    if std::env::var("PASSGATE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and PASSGATE_REQUIRE_BROWSER=1");
    }
    eprintln!("SKIPPED {test}: {why} (set PASSGATE_REQUIRE_BROWSER=1 to fail instead)");
    false
}

impl Provider {
    /// Starts a provider whose one client accepts `redirect_uris`; accounts
    /// alice (groups devs), bob (no groups), and `bad user` (a name with a
    /// space and a colon in preferred_username).
    pub fn start(test: &str, redirect_uris: &[&str]) -> Option<Provider> {
        if !available(test) {
            return None;
        }
        let opts = serde_json::json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": redirect_uris,
            "accounts": {
                "alice": { "groups": ["devs"] },
                "bob": { "groups": [] },
                "mallory": { "preferred_username": "mal:lory", "groups": ["devs"] },
            },
        });
        let mut child = Command::new("node")
            .arg(dir().join("provider.mjs"))
            .arg(opts.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let issuer = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("provider did not start: {line:?}"))
            .to_owned();
        let addr = issuer.strip_prefix("http://").unwrap().parse().unwrap();
        let stdin = child.stdin.take();
        Some(Provider {
            child,
            _stdin: stdin,
            issuer,
            addr,
        })
    }

    /// Stops the provider (an issuer that is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Makes the next token response carry a forged ID token (`mode`: see
    /// provider.mjs `FORGE`).
    pub async fn tamper(&self, mode: &str) {
        let r = http1_async_from(
            None,
            self.addr,
            "POST",
            &format!("/harness/tamper?mode={mode}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// Registers one more exact redirect URI for the client.
    pub async fn allow_redirect(&self, uri: &str) {
        let target = format!("/harness/redirect-uri?uri={}", encode(uri));
        let r = http1_async_from(None, self.addr, "POST", &target, &[], b"").await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// Authorization codes issued from now on live `seconds` (default 60).
    pub async fn code_ttl(&self, seconds: u64) {
        let target = format!("/harness/code-ttl?seconds={seconds}");
        let r = http1_async_from(None, self.addr, "POST", &target, &[], b"").await;
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// Adds a second key to the JWKS and signs ID tokens with it from now on.
    pub async fn rotate(&self) {
        let r = http1_async_from(None, self.addr, "POST", "/harness/rotate", &[], b"").await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

/// A browser-less user agent for the provider: a cookie jar and redirects
/// followed by hand, stopping at the first redirect off the provider.
#[derive(Default)]
pub struct Agent {
    cookies: BTreeMap<String, String>,
}

/// Where the login ended: the redirect to the relying party.
#[derive(Debug)]
pub struct Callback {
    pub url: String,
}

impl Callback {
    /// A query parameter of the callback URL.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.url.split_once('?')?.1;
        url_query(query).remove(name)
    }
}

impl Agent {
    /// Follows `url` (on the provider), filling the login form as `user`
    /// and accepting consent, until the provider redirects elsewhere.
    pub async fn sign_in(&mut self, provider: &Provider, url: &str, user: &str) -> Callback {
        let mut next = url.to_owned();
        for _ in 0..12 {
            let Some(target) = next.strip_prefix(&provider.issuer) else {
                return Callback { url: next };
            };
            let r = self.send(provider.addr, "GET", target, "").await;
            if let Some(loc) = location(&r) {
                next = absolute(provider, &loc);
                continue;
            }
            assert_eq!(r.status, 200, "{target}: {}", r.text());
            let page = r.text();
            let action = form_action(&page).unwrap_or_else(|| panic!("no form: {page}"));
            let body = if page.contains("name=\"login\"") {
                format!("prompt=login&login={user}&password=any")
            } else {
                "prompt=consent".to_owned()
            };
            let r = self.send(provider.addr, "POST", &action, &body).await;
            next = absolute(
                provider,
                &location(&r).unwrap_or_else(|| panic!("{}: {}", r.status, r.text())),
            );
        }
        panic!("sign-in did not finish")
    }

    /// GET `target` from `addr` with this agent's cookies.
    pub async fn get(&mut self, addr: SocketAddr, target: &str) -> Reply {
        self.send_with(addr, "GET", target, "", &[]).await
    }

    /// GET `target` with extra headers (Fetch Metadata, `X-Forwarded-For`).
    pub async fn get_with(
        &mut self,
        addr: SocketAddr,
        target: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        self.send_with(addr, "GET", target, "", extra).await
    }

    /// POST a form to `target` with extra headers (`Origin`).
    pub async fn post_with(
        &mut self,
        addr: SocketAddr,
        target: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        self.send_with(addr, "POST", target, body, extra).await
    }

    /// The agent's cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.get(name).cloned()
    }

    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_owned(), value.to_owned());
    }

    async fn send(&mut self, addr: SocketAddr, method: &str, target: &str, body: &str) -> Reply {
        self.send_with(addr, method, target, body, &[]).await
    }

    async fn send_with(
        &mut self,
        addr: SocketAddr,
        method: &str,
        target: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = Vec::new();
        if !cookie.is_empty() {
            headers.push(("cookie", cookie.as_str()));
        }
        if method == "POST" {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        headers.extend_from_slice(extra);
        let r = http1_async_from(None, addr, method, target, &headers, body.as_bytes()).await;
        for sc in r.headers.get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let pair = sc.split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                if sc.contains("expires=Thu, 01 Jan 1970")
                    || sc.contains("Max-Age=0;")
                    || v.is_empty()
                {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        r
    }
}

fn location(r: &Reply) -> Option<String> {
    (300..400)
        .contains(&r.status)
        .then(|| r.headers.get("location")?.to_str().ok().map(str::to_owned))
        .flatten()
}

fn absolute(provider: &Provider, loc: &str) -> String {
    if loc.starts_with('/') {
        format!("{}{loc}", provider.issuer)
    } else {
        loc.to_owned()
    }
}

fn form_action(page: &str) -> Option<String> {
    let start = page.find("action=\"")? + 8;
    let end = page[start..].find('"')? + start;
    Some(page[start..end].replace("&amp;", "&"))
}

/// Decodes an `application/x-www-form-urlencoded` query.
pub fn url_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
