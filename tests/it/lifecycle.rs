//! The process around the requests: SIGINT drains like SIGTERM, a hung
//! backend is cut when `shutdown_grace` runs out (exit 1), the admin socket is gone
//! after exit, and `serve` refuses to start on a listen address in use
//! (issue #21, "Missing"). SIGTERM's drain itself is pinned in `tls`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;

/// A hand-driven backend for one request: reports when the request head
/// has arrived, then answers `drained` when `release` fires, or never when
/// `release` is dropped.
/// Joining it returns true when the gateway closed the upstream connection.
struct Held {
    url: String,
    arrived: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Held {
    fn start() -> Held {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", upstream.local_addr().unwrap());
        let (arrived_tx, arrived) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = upstream.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap() == 0 {
                    return true;
                }
                head.push(byte[0]);
            }
            arrived_tx.send(()).unwrap();
            if release_rx.recv().is_ok() {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndrained")
                    .unwrap();
                return false;
            }
            // Never answered: wait for the gateway to hang up.
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            matches!(s.read(&mut byte), Ok(0) | Err(_))
        });
        Held {
            url,
            arrived,
            release,
            thread,
        }
    }

    fn wait_arrived(&self) {
        self.arrived
            .recv_timeout(Duration::from_secs(20))
            .expect("the request did not reach the backend");
    }
}

#[test]
fn sigint_drains_in_flight_requests_like_sigterm_and_removes_the_admin_socket() {
    let held = Held::start();
    let mut pg = Passgate::start(&ConfigBuilder::new(&held.url));
    let socket = pg.dir.path().join("data/admin.sock");
    assert!(socket.exists(), "no admin socket while serving");
    let addr = pg.addr;
    let client = std::thread::spawn(move || get(addr, "/repo/long", None));
    held.wait_arrived();

    pg.signal("INT");
    assert!(
        pg.wait_log("shutting down", Duration::from_secs(10)),
        "SIGINT did not start a graceful shutdown:\n{}",
        pg.log_text()
    );
    // Draining: still running while the request is held.
    assert_eq!(
        pg.wait_exit(Duration::from_millis(300)),
        None,
        "exited early"
    );
    held.release.send(()).unwrap();
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "drained");
    assert!(!held.thread.join().unwrap());
    assert_eq!(pg.wait_stopped(Duration::from_secs(20)), 0);
    assert!(
        pg.log_text().contains("passgate stopped"),
        "{}",
        pg.log_text()
    );
    assert!(!socket.exists(), "the admin socket outlived the server");
}

#[test]
fn a_hung_backend_is_cut_when_shutdown_grace_runs_out_and_the_exit_code_says_so() {
    let held = Held::start();
    let mut b = ConfigBuilder::new(&held.url);
    b.server_extra = "shutdown_grace = \"2s\"\n".to_owned();
    let mut pg = Passgate::start(&b);
    let socket = pg.dir.path().join("data/admin.sock");
    let mut client = TcpStream::connect(pg.addr).unwrap();
    client
        .write_all(b"GET /repo/hung HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    held.wait_arrived();
    // Never answered: the backend now only waits for the gateway to hang up.
    drop(held.release);

    let signalled = Instant::now();
    pg.signal("TERM");
    // Not before the grace is over: the request is still being waited for.
    assert_eq!(
        pg.wait_exit(Duration::from_millis(1500)),
        None,
        "exited before shutdown_grace ran out"
    );
    // ...and not much after: the hung request does not keep it alive.
    let code = pg.wait_stopped(Duration::from_secs(15));
    let took = signalled.elapsed();
    // Requests were lost: not a success, so a supervisor notices (exit 1,
    // docs/operations.md), and stderr says why.
    assert_eq!(code, 1, "{}", pg.log_text());
    assert!(
        pg.log_text()
            .contains("error: shutdown_grace (2s) ran out: connections still open were closed"),
        "{}",
        pg.log_text()
    );
    assert!(
        took < Duration::from_secs(2 + 10),
        "exit took {took:?} with a 2 s grace"
    );
    assert!(
        pg.log_text().contains("shutdown grace elapsed"),
        "{}",
        pg.log_text()
    );
    // The client's request was cut, without an answer...
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    match client.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the client connection outlived the gateway: {e}"),
    }
    assert!(
        got.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    // ...so was the upstream one, and the socket file is gone.
    assert!(
        held.thread.join().unwrap(),
        "the upstream connection stayed open"
    );
    assert!(!socket.exists(), "the admin socket outlived the server");
}

#[test]
fn serve_on_a_listen_address_in_use_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let text = ConfigBuilder::new("http://127.0.0.1:9")
        .render()
        .replace("127.0.0.1:0", &addr.to_string());
    assert!(text.contains(&addr.to_string()));
    std::fs::write(&config, text).unwrap();
    let (code, stderr) = serve_exits(&config);
    assert_eq!(code, Some(1), "DESIGN: 1 is a runtime failure\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(
        stderr.to_ascii_lowercase().contains("in use"),
        "the cause is named: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("data/admin.sock").exists(),
        "an admin socket was left behind"
    );
    drop(taken);
}
