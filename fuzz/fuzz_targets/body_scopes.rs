//! Fuzz target for the `body_scopes` JSON reader (`routes::BodyScopes`), as
//! the shipped LFS batch route configures it.
//!
//! Invariants, for any body bytes:
//! - `required` never panics;
//! - it picks scopes only for a body that is a JSON object whose `operation`
//!   member is a listed string, and then exactly that value's scopes, as an
//!   independent JSON parser (serde_json's `Value`) reads the body: the
//!   backend cannot read a different operation than the one authorised;
//! - no other top-level key of an accepted body is `operation` in another
//!   case (Go's `encoding/json` would read it).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use passgate::config::Config;
use passgate::routes::BodyScopes;
use passgate::scopes::ScopeSet;

fuzz_target!(|data: &[u8]| {
    let (rule, read, write) = rule();
    let Ok(required) = rule.required(data) else {
        return;
    };
    let doc: serde_json::Value = match serde_json::from_slice(data) {
        Ok(doc) => doc,
        // The reader skips other members without serde_json's 128-level
        // nesting limit; a backend with that limit refuses the body outright,
        // so it cannot read another operation. Anything else is a finding.
        Err(e) if e.to_string().contains("recursion limit") => return,
        Err(e) => panic!("accepted non-JSON: {e}"),
    };
    let object = doc.as_object().expect("accepted a body that is not an object");
    for key in object.keys() {
        assert!(
            key == "operation" || key.to_lowercase() != "operation",
            "accepted a second operation key {key:?}"
        );
    }
    let operation = object
        .get("operation")
        .and_then(|v| v.as_str())
        .expect("accepted a body without a string operation");
    let want = match operation {
        "download" => *read,
        "upload" => *write,
        other => panic!("accepted the unlisted operation {other:?}"),
    };
    assert_eq!(required, want, "scopes of {operation:?}");
});

/// The shipped LFS batch rule, built through the config loader so that the
/// target follows whatever shape `BodyScopes` takes.
fn rule() -> &'static (BodyScopes, ScopeSet, ScopeSet) {
    static RULE: OnceLock<(BodyScopes, ScopeSet, ScopeSet)> = OnceLock::new();
    RULE.get_or_init(|| {
        let config = Config::parse(Path::new("/fuzz/proxy.toml"), CONFIG).expect("config");
        let route = config.routes.iter().next().expect("one route");
        let rule = route.body.clone().expect("body_scopes");
        let read = config.scopes.required(&["repository:read".to_owned()]).expect("read");
        let write = config.scopes.required(&["repository:write".to_owned()]).expect("write");
        (rule, read, write)
    })
}

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]

[store]
path = "data/passgate.redb"

[auth]
realm = "fuzz"

[upstreams.git]
url = "http://127.0.0.1:9"

[[routes]]
name = "lfs-batch"
methods = ["POST"]
path = "/{owner}/{repo}.git/info/lfs/objects/batch"
access = "app-password"
scopes = ["repository:read"]
upstream = "git"
body_scopes = { field = "operation", max_bytes = 65536, values = { download = ["repository:read"], upload = ["repository:write"] } }
"#;
