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
        // JSON's grammar puts no bound on a number (RFC 8259, section 6);
        // serde_json refuses one beyond f64's range (`1E999`), Go's decoder
        // skips it in a member it does not read. Either way the backend reads
        // the same operation or refuses the body: not a finding.
        Err(e) if e.to_string().contains("number out of range") => return,
        // The grammar allows any `\uXXXX`, a lone surrogate included;
        // serde_json refuses one, Go's decoder reads it as U+FFFD. Neither
        // can turn another member into an operation.
        Err(e) if has_surrogate_escape(data) && e.to_string().contains("hex escape") => return,
        Err(e) => panic!("accepted non-JSON: {e}"),
    };
    let object = doc
        .as_object()
        .expect("accepted a body that is not an object");
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

/// Whether `data` holds a `\uD800`–`\uDFFF` escape (either case).
fn has_surrogate_escape(data: &[u8]) -> bool {
    data.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && w[2].eq_ignore_ascii_case(&b'd')
            && matches!(w[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
    })
}

/// The shipped LFS batch rule, built through the config loader so that the
/// target follows whatever shape `BodyScopes` takes.
fn rule() -> &'static (BodyScopes, ScopeSet, ScopeSet) {
    static RULE: OnceLock<(BodyScopes, ScopeSet, ScopeSet)> = OnceLock::new();
    RULE.get_or_init(|| {
        let config = Config::parse(Path::new("/fuzz/proxy.toml"), CONFIG).expect("config");
        let route = config.routes.iter().next().expect("one route");
        let rule = route.body.clone().expect("body_scopes");
        let read = config
            .scopes
            .required(&["repository:read".to_owned()])
            .expect("read");
        let write = config
            .scopes
            .required(&["repository:write".to_owned()])
            .expect("write");
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
