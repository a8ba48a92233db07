//! A real browser for page tests: Debian's headless Chromium driven through
//! WebDriver (fantoccini) by a chromedriver that the harness starts on a free
//! loopback port, with a fresh profile per browser.
//!
//! When chromium or chromedriver is missing, [`Browser::start`] prints a
//! notice and returns `None` (the test then passes without a browser),
//! unless `PASSGATE_REQUIRE_BROWSER=1` is set (as `.ci/run` does): then it
//! panics, so CI can never skip the browser tests silently.
//!
//! [`Front`] plays the SSO proxy: every request it receives is sent on to
//! passgate from a chosen local address (one in `trusted_proxies`) with the
//! user header set to its user, whatever the browser sent.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::free_port;

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
];

/// How long a page element may take to appear under a loaded machine.
const ELEMENT_WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session, or `None` (with a notice)
    /// when they are not installed and no browser is required.
    pub async fn start() -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (
            find(&["chromium", "chromium-browser"]),
            find(&["chromedriver"]),
        ) else {
            let msg = "chromium and chromedriver are needed for the browser tests (apt-get install chromium chromium-driver)";
            if std::env::var("PASSGATE_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("{msg}; PASSGATE_REQUIRE_BROWSER=1");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        };
        let port = free_port();
        let mut driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = driver.kill();
                panic!("chromedriver did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                panic!("WebDriver session failed: {e}");
            }
        };
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// The text of the element `css`, waiting for it to appear (a page
    /// that a click or a redirect is still loading has none yet).
    pub async fn text(&self, css: &str) -> String {
        self.element(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Waits until the element `css` holds exactly `want`, or panics with
    /// what it held at the deadline.
    pub async fn wait_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + ELEMENT_WAIT;
        loop {
            let found = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.ok(),
                Err(_) => None,
            };
            if found.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{css}: {found:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element `css`, waiting for it to appear.
    pub async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(ELEMENT_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    /// Types `text` into the field `css`, waiting for it to appear.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.element(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
    }

    /// The whole page as HTML.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Ends the session (chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The SSO proxy in front: forwards everything to `target` from `from`,
/// with `header: user` set (any copy the client sent is dropped).
pub struct Front {
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Front {
    pub fn start(target: SocketAddr, from: IpAddr, header: &'static str, user: &str) -> Front {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let user = HeaderValue::from_str(user).unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let user = user.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| relay(req, target, from, header, user.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Front {
            addr,
            _runtime: runtime,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn relay(
    mut req: http::Request<Incoming>,
    target: SocketAddr,
    from: IpAddr,
    header: &'static str,
    user: HeaderValue,
) -> Result<http::Response<Incoming>, std::io::Error> {
    req.headers_mut().remove(header);
    req.headers_mut().insert(header, user);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(target).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    send.send_request(req).await.map_err(std::io::Error::other)
}

/// Writes a PNG screenshot of the current page to `path`.
pub async fn screenshot(browser: &Browser, path: &Path) {
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(path, png).unwrap();
}
