//! Fuzz target for `proxy.toml` parsing (`config::Config::parse`).
//!
//! Invariants, for any text:
//! - parsing never panics, and a refusal is an error that names the file;
//! - a config that loads can be described (`check-config`'s listing), its
//!   shadow and trailing-slash analyses run, and every route's own example
//!   request is routed without a panic; when no earlier route could take it
//!   (the route is first), the example is routed to that route.
//!
//! `Config::parse` does no I/O beyond what the text names (no file is read:
//! relative paths are only resolved against the config's directory).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use passgate::config::Config;
use passgate::routes::RouteError;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/fuzz/proxy.toml");
    let config = match Config::parse(file, text) {
        Ok(config) => config,
        Err(e) => {
            assert!(e.to_string().contains("proxy.toml"), "{e}");
            return;
        }
    };
    let listing = passgate::cli::check_config::describe(&config);
    assert!(listing.lines().count() > config.routes.len());
    let _ = config.routes.shadowed();
    let _ = config.routes.slash_conflicts();
    for (i, route) in config.routes.iter().enumerate() {
        let (method, path, query) = route.example();
        let path = passgate::path::normalise(&path).expect("a route's example normalises");
        let found = config.routes.find(&method, &path, query.as_deref());
        if i == 0 && !path.has_trailing_slash() {
            match found {
                Ok(first) => assert_eq!(first.name, route.name),
                // A rule listing two values for one key matches no query.
                Err(RouteError::Query(_)) => {}
                Err(e) => panic!("first route's example {path} {query:?}: {e}"),
            }
        }
    }
});
