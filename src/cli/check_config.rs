//! `passgate check-config`: validate, open the files the config names (the
//! TLS certificate and key, every upstream's `ca_file`) as `serve` does,
//! print the compiled routes in match order, warn about rules an earlier
//! rule makes unreachable or whose trailing slash gets their requests refused.

use super::{load, load_tls, upstream_failure, ConfigArg, Failure};
use crate::config::Config;
use crate::routes::Access;

pub fn run(arg: &ConfigArg, strict: bool) -> Result<(), Failure> {
    let config = load(arg)?;
    // The files the config names, opened by the code `serve` opens them
    // with: a certificate, key or ca_file that cannot be used fails here,
    // not at the next start or reload.
    load_tls(&config)?;
    crate::gateway::upstreams(&config).map_err(|e| upstream_failure(&config.file, &e))?;
    print!("{}", describe(&config));
    let w = config.warnings();
    for line in w.shadowed.iter().chain(&w.slash) {
        eprintln!("warning: {line}");
    }
    if strict && !(w.shadowed.is_empty() && w.slash.is_empty()) {
        return Err(Failure::Usage(format!(
            "{} shadowed route(s), {} route(s) refused for their trailing slash (--strict)",
            w.shadowed.len(),
            w.slash.len()
        )));
    }
    Ok(())
}

/// The routes in match order, one per line.
pub fn describe(config: &Config) -> String {
    let mut out = format!(
        "{}: ok, {} route(s) in match order:\n",
        config.file.display(),
        config.routes.len()
    );
    if let Some(page) = &config.selfservice {
        let identity = match &page.identity {
            crate::config::PageIdentity::Header { user_header } => {
                format!("selfservice (identity header {user_header})")
            }
            crate::config::PageIdentity::Oidc(o) => {
                format!("selfservice (identity oidc {})", o.issuer)
            }
        };
        out.push_str(&format!(
            "{:>3}. {:<22} {:<12} {:<52} {:<40} -> passgate itself, never forwarded (line {})\n",
            0,
            "selfservice",
            "GET,POST",
            format!("{}/**", page.path),
            identity,
            page.line
        ));
    }
    for (i, r) in config.routes.iter().enumerate() {
        let methods = r.methods.as_ref().map_or_else(
            || "*".to_owned(),
            |m| m.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(","),
        );
        let mut target = r.pattern.to_string();
        for (n, (k, v)) in r.query.pairs().iter().enumerate() {
            target.push(if n == 0 { '?' } else { '&' });
            target.push_str(&format!("{k}={v}"));
        }
        let access = match r.access {
            Access::AppPassword => {
                let mut a = format!("app-password [{}]", config.scopes.join(r.required));
                if let Some(b) = &r.body {
                    let by: Vec<String> = b
                        .values
                        .iter()
                        .map(|(v, s)| format!("{v}:{}", config.scopes.join(*s)))
                        .collect();
                    a.push_str(&format!(" + body.{} {{{}}}", b.field, by.join(", ")));
                }
                a
            }
            other => other.to_string(),
        };
        let access = match &r.resource {
            Some(res) => format!("{access} resource={res}"),
            None => access,
        };
        let upstream = r
            .upstream
            .and_then(|u| config.upstreams.get(u))
            .map_or("-", |u| u.name.as_str());
        out.push_str(&format!(
            "{:>3}. {:<22} {:<12} {:<52} {:<40} -> {} (line {})\n",
            i + 1,
            r.name,
            methods,
            target,
            access,
            upstream,
            r.line
        ));
    }
    out
}
