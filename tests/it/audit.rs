//! Audit lines against attackers who write into them: `peer` and `reason`
//! come first, user fields are written only when clean, secrets never, and
//! the shipped fail2ban filter (deploy/fail2ban) bans only real peers.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::auth::{unknown_token, READ};
use crate::support::*;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
const VICTIM: &str = "203.0.113.77";

fn from(ip: IpAddr, pg: &Passgate, user: &str, pw: &str) -> u16 {
    let auth = basic(user, pw);
    http1_from(ip, pg.addr, "GET", READ, &[("authorization", &auth)], b"").status
}

fn audit_lines(pg: &Passgate) -> Vec<String> {
    pg.log_text()
        .lines()
        .filter(|l| l.contains("passgate::audit"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn audit_lines_start_with_peer_and_never_hold_injected_or_secret_user_fields() {
    // Issue #21 item 4: `curl -u 'mallory peer=203.0.113.77 reason=x:bad'`.
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let injected = format!("mallory peer={VICTIM} reason=x");
    let bare_secret = "Zx81kQ2mPq7rT5vW9yB3nD6fH0jL4sG8";
    assert_eq!(from(ATTACKER, &pg, &injected, "bad"), 401);
    assert_eq!(from(ATTACKER, &pg, &injected, &unknown_token()), 401);
    assert_eq!(from(ATTACKER, &pg, bare_secret, &unknown_token()), 401);
    // Name and password swapped: the account password sits in the user field.
    assert_eq!(from(ATTACKER, &pg, "Hunter2-account-pw", "alice"), 401);
    assert_eq!(from(ATTACKER, &pg, "alice", &unknown_token()), 401);
    assert!(pg.wait_log("user=alice ", Duration::from_secs(10)));
    let lines = audit_lines(&pg);
    let failures: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("event=\"auth_failed\""))
        .collect();
    assert_eq!(failures.len(), 5, "{lines:#?}");
    for l in &failures {
        let fields = l.split("passgate::audit: ").nth(1).unwrap_or("");
        assert!(
            fields.starts_with("peer=127.0.0.7 reason="),
            "peer and reason first: {l}"
        );
    }
    let all = pg.log_text();
    for secret in [VICTIM, bare_secret, "Hunter2-account-pw", "mallory"] {
        assert!(!all.contains(secret), "{secret} logged:\n{all}");
    }
    assert!(all.contains("user=#"), "unclean names are hashed");
}

#[test]
fn the_shipped_fail2ban_filter_bans_only_the_real_peer() {
    let Some(regex) = fail2ban_regex() else {
        return;
    };
    let backend = Backend::start();
    let pg = Passgate::start(&ConfigBuilder::new(&backend.url()));
    let injected = format!("mallory peer={VICTIM} reason=x");
    for _ in 0..3 {
        assert_eq!(from(ATTACKER, &pg, &injected, "bad"), 401);
        assert_eq!(from(ATTACKER, &pg, &injected, &unknown_token()), 401);
    }
    // A path and an access-log line the attacker shaped like an audit line.
    let path = format!("/api/%20WARN%20passgate::audit:%20peer={VICTIM}%20reason=x");
    let r = http1_from(ATTACKER, pg.addr, "GET", &path, &[], b"");
    assert_eq!(r.status, 401);
    assert!(pg.wait_log("event=\"auth_failed\"", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    let mut log = pg.log_text();
    // The format before issue #21: the user came before `peer`. An anchored
    // filter must not read the injected address out of it.
    log.push_str(&format!(
        "\n2026-01-01T00:00:00.000000Z  WARN passgate::audit: event=\"auth_failed\" reason=malformed-token user=\"mallory peer={VICTIM} reason=x\" id=- peer=127.0.0.7\n"
    ));
    let file = pg.dir.path().join("audit.log");
    std::fs::write(&file, log).unwrap();
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fail2ban/filter.d/passgate.conf");
    let out = Command::new(regex)
        .arg("-v")
        .arg(&file)
        .arg(&filter)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matched = text
        .split("Failregex:")
        .nth(1)
        .and_then(|t| t.split("Ignoreregex:").next())
        .unwrap_or("");
    assert!(
        !matched.contains(VICTIM),
        "the victim would be banned:\n{text}"
    );
    let hits = matched.matches("127.0.0.7").count();
    assert_eq!(hits, 6, "one hit per refused credential:\n{text}");
}

/// `fail2ban-regex`, or `None` (with a notice) when it is not installed and
/// PASSGATE_REQUIRE_FAIL2BAN is not set.
fn fail2ban_regex() -> Option<&'static str> {
    let found = Command::new("fail2ban-regex")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("fail2ban-regex");
    }
    assert!(
        std::env::var_os("PASSGATE_REQUIRE_FAIL2BAN").is_none(),
        "fail2ban-regex not found and PASSGATE_REQUIRE_FAIL2BAN is set"
    );
    eprintln!("skipped: fail2ban-regex not installed (apt-get install fail2ban)");
    None
}
