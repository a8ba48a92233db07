//! README's recipes run as written (#20): the shell blocks marked
//! `<!-- recipe: NAME … -->` in README.md are extracted and run by bash against
//! the real binary, the SHIPPED `proxy.toml` and the real `git http-backend`
//! (see `cgi`), so a recipe that stops working fails here instead of on a new
//! user's machine.
//!
//! What the test changes, and only that: the gateway's port (a free one
//! instead of 8080, in the recipe and the config), the upstreams (pointed at
//! the test's git server), fast argon2, `cargo` (a no-op: the binary is built
//! already and linked as `./target/release/passgate`), a wait until `serve &`
//! listens and its admin socket exists (as for a user typing the next
//! line), and `GIT_ASKPASS` standing in for the user who pastes the
//! password when git asks. Every edit asserts its anchor.

use std::path::Path;
use std::process::{Command, Output};

use crate::cgi::{git_command, GitServer};
use crate::support::*;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
const SHIPPED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"));

/// The ```sh block right after `<!-- recipe: NAME … -->`.
fn recipe(name: &str) -> String {
    let marker = format!("<!-- recipe: {name} ");
    let (_, after) = README
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let (_, block) = after
        .split_once("```sh\n")
        .unwrap_or_else(|| panic!("no ```sh block after {marker}"));
    let (body, _) = block.split_once("\n```").expect("unterminated block");
    body.to_owned()
}

/// `text` with `from` replaced by `to`, asserting `from` occurs.
fn edit(text: &str, from: &str, to: &str, what: &str) -> String {
    assert!(text.contains(from), "{what}: expected {from:?}");
    text.replace(from, to)
}

/// A user's directory holding the shipped config, the binary where README
/// says it is, a HOME and an askpass that answers git's password prompt.
struct Desk {
    dir: tempfile::TempDir,
    port: u16,
    git: GitServer,
}

impl Desk {
    fn new() -> Desk {
        let git = GitServer::start();
        let bare = git.bare_repo("alice", "project");
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        // Something to clone and fetch.
        let seed = dir.path().join("seed");
        for args in [
            vec!["init", "--quiet", "--initial-branch=main", "seed"],
            vec![
                "-C",
                "seed",
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                "seed",
            ],
        ] {
            let out = git_command(&home, dir.path()).args(&args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        let out = git_command(&home, &seed)
            .args(["push", "--quiet"])
            .arg(&bare)
            .arg("main")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::remove_dir_all(&seed).unwrap();

        let port = free_port();
        let config = [
            (
                r#"listen = ["127.0.0.1:8080"]"#,
                format!(r#"listen = ["127.0.0.1:{port}"]"#),
            ),
            ("http://127.0.0.1:3000", git.url()),
            ("http://127.0.0.1:3001", git.url()),
        ]
        .iter()
        .fold(SHIPPED.to_owned(), |t, (from, to)| {
            edit(&t, from, to, "proxy.toml")
        });
        std::fs::write(dir.path().join("proxy.toml"), config + "\n" + FAST_ARGON2).unwrap();
        std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
        std::os::unix::fs::symlink(BIN, dir.path().join("target/release/passgate")).unwrap();
        // git asks for the password when it has none: answer with $PW, as the
        // user pastes it, and count the prompts.
        let askpass = dir.path().join("askpass");
        std::fs::write(
            &askpass,
            "#!/bin/sh\necho \"$1\" >> \"$HOME/prompts\"\nprintf '%s\\n' \"$PW\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &askpass,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Desk { dir, port, git }
    }

    fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }

    /// Runs recipe `name` with bash in the desk directory.
    fn run(&self, name: &str) -> Output {
        let body = edit(
            &recipe(name),
            "127.0.0.1:8080",
            &format!("127.0.0.1:{}", self.port),
            name,
        );
        let body = edit(&body, "serve &", "serve & wait_listening", name);
        let script = format!(
            "set -euo pipefail\n\
             set -a  # every variable reaches GIT_ASKPASS, as a paste would\n\
             cargo() {{ :; }}\n\
             wait_listening() {{\n\
               for _ in $(seq 600); do\n\
                 [ -S data/admin.sock ] && (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && return 0\n\
                 sleep 0.05\n\
               done\n\
               echo 'serve did not start' >&2; return 1\n\
             }}\n\
             trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n\
             {body}\n",
            port = self.port,
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", self.dir.path().join("askpass"))
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README recipe {name} failed:\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}\n--- git server\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.git.stderr_text(),
        );
        out
    }

    fn prompts(&self) -> Vec<String> {
        std::fs::read_to_string(self.home().join("prompts"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn readme_quick_start_runs_as_written() {
    let desk = Desk::new();
    let out = desk.run("quick-start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("laptop"),
        "list shows the password: {stdout}"
    );
    // The curl went through to git http-backend as alice.
    assert!(
        desk.git
            .records()
            .iter()
            .any(|r| r.remote_user() == Some("alice") && r.status == 200),
        "{:?}",
        desk.git.records()
    );
}

#[test]
fn readme_git_walkthrough_runs_as_written_and_the_credential_sticks() {
    let desk = Desk::new();
    desk.run("git-walkthrough");
    // git asked once (the clone); the stored credential served the fetch.
    let prompts = desk.prompts();
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert!(prompts[0].starts_with("Password"), "{prompts:?}");
    assert!(exists(&desk.dir.path().join("project/.git")));
    let creds = std::fs::read_to_string(desk.home().join(".git-credentials")).unwrap();
    assert!(creds.contains("alice:pgap_"), "credential stored");
    let fetches = desk
        .git
        .records()
        .iter()
        .filter(|r| r.path.ends_with("/git-upload-pack") && r.remote_user() == Some("alice"))
        .count();
    assert!(fetches >= 1, "{:?}", desk.git.records());
}
