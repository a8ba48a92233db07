//! `[[routes]]` compiled to matchers: first match wins, in file order.
//!
//! A [`Route`] pairs a method list, a path [`Pattern`] and a [`QueryRule`] with
//! an [`Access`] kind, the scopes it requires and its upstream. [`Routes::find`]
//! classifies a request by its *normalised* path (see `path.rs`), never by the
//! raw target, so what is matched is what is forwarded.
//!
//! A path ending in `/` is matched twice, as it is and without the slash,
//! because backends differ on whether `/admin/` is `/admin`: when the two
//! matches lead to different [`Decision`]s the request is refused
//! ([`RouteError::TrailingSlash`], 400), otherwise the route matched as it is
//! applies and the path is forwarded as it is.
//!
//! [`Routes::shadowed`] finds rules that can never match because an earlier
//! rule takes all their requests, and [`Routes::slash_conflicts`] rules whose
//! pattern ends in `/` but whose requests are all refused for their slash
//! (both reported by `check-config`).
//!
//! Pure: no I/O, no authentication (that is `access.rs`).

pub mod pattern;
pub mod query;
pub mod resource;

use std::fmt;

use http::Method;
use serde::Deserialize;

use crate::path::NormalPath;
use crate::scopes::ScopeSet;
use pattern::Pattern;
use query::{QueryError, QueryRule};
use resource::Resource;

/// What a route demands of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Basic auth with an app password holding the route's scopes.
    AppPassword,
    /// The backend's web UI: app passwords refused, all else forwarded untouched.
    Web,
    /// Forwarded without any check.
    Public,
    /// Refused with 403 for everyone.
    Deny,
    /// Answered by passgate: a JSON description of the presented app password.
    Introspect,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::AppPassword => "app-password",
            Access::Web => "web",
            Access::Public => "public",
            Access::Deny => "deny",
            Access::Introspect => "introspect",
        })
    }
}

/// One compiled `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Shared so the access log can hold it without copying.
    pub name: std::sync::Arc<str>,
    /// Its request counters and durations, resolved once here so that a
    /// request records without a lookup (`metrics.rs`).
    pub metrics: std::sync::Arc<crate::metrics::RouteMetrics>,
    /// Line of the entry in the config file, for messages.
    pub line: usize,
    /// `None` = any method.
    pub methods: Option<Vec<Method>>,
    pub pattern: Pattern,
    pub query: QueryRule,
    pub access: Access,
    /// Scopes an app password must hold (only for `AppPassword`).
    pub required: ScopeSet,
    /// Index into `Config::upstreams`; `None` only for `Deny`.
    pub upstream: Option<usize>,
    /// Extra scopes chosen by a field of the JSON request body (Git LFS batch).
    pub body: Option<BodyScopes>,
    /// The repository a request touches (`resource = "{owner}/{repo}"`), for
    /// passwords limited to some repositories; `None`: the route names none,
    /// and a limited password is refused on it.
    pub resource: Option<Resource>,
}

/// Everything a route decides about the requests it matches, as opposed to
/// what it matches them by (name, methods, pattern, query). Two routes with
/// equal decisions treat a request the same way, so a path ending in `/` may
/// be matched by either (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub access: Access,
    pub required: ScopeSet,
    pub upstream: Option<usize>,
    pub body: Option<&'a BodyScopes>,
    /// The repository the request touches (compared as templates: the same
    /// captures at the same places render the same repository).
    pub resource: Option<&'a Resource>,
}

/// Scopes that depend on one top-level string field of a JSON request body,
/// e.g. the LFS batch `operation`: `download` needs read, `upload` needs write.
///
/// The body is read up to `max_bytes` (413 beyond), then forwarded unchanged.
/// A body that is not JSON, lacks the field or names an unlisted value → 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyScopes {
    pub field: String,
    pub max_bytes: usize,
    pub values: Vec<(String, ScopeSet)>,
}

impl BodyScopes {
    /// The scopes the body's field value requires, or why the body is refused.
    ///
    /// The field must appear once at the top level and no other top-level
    /// key may equal it ignoring case: backends differ on which copy wins
    /// (Go's `encoding/json`, in Gitea and Forgejo, matches keys
    /// case-insensitively, others keep the first or the last copy).
    pub fn required(&self, body: &[u8]) -> Result<ScopeSet, &'static str> {
        // JSON is UTF-8 (RFC 8259 §8.1); the reader below skips the values
        // of other keys without checking them, so check the whole body here:
        // a backend must never be handed a body the gateway could not read.
        if std::str::from_utf8(body).is_err() {
            return Err("request body is not UTF-8 JSON");
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let value =
            serde::Deserializer::deserialize_map(&mut de, FieldVisitor { field: &self.field })
                .map_err(|_| "request body is not a JSON object naming one operation")?;
        de.end()
            .map_err(|_| "request body is not a JSON object naming one operation")?;
        let value = value?;
        self.values
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, s)| *s)
            .ok_or("request body does not name an allowed operation")
    }
}

/// Reads a JSON object's top level for one string field, refusing repeats
/// and case variants of its name.
struct FieldVisitor<'a> {
    field: &'a str,
}

impl<'de> serde::de::Visitor<'de> for FieldVisitor<'_> {
    type Value = Result<String, &'static str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Option<String> = None;
        let mut verdict = Ok(());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.field && found.is_none() && verdict.is_ok() {
                match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(v) => found = Some(v),
                    _ => verdict = Err("request body does not name an allowed operation"),
                }
                continue;
            }
            if same_ignoring_case(&key, self.field) {
                verdict = Err("request body names its operation field more than once");
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(verdict.and_then(|()| found.ok_or("request body does not name an allowed operation")))
    }
}

/// Whether two keys are equal under Unicode simple case folding, as Go's
/// `encoding/json` compares them (the Kelvin sign is `k`, `ſ` is `s`).
fn same_ignoring_case(a: &str, b: &str) -> bool {
    let lower = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<String>();
    let upper = |s: &str| s.chars().flat_map(char::to_uppercase).collect::<String>();
    lower(a) == lower(b) || upper(a) == upper(b)
}

impl Route {
    /// What this route decides about a request. The destructuring is
    /// exhaustive on purpose: a new `Route` field does not compile until it is
    /// listed here, either as part of the decision (what happens to the
    /// request: access, scopes, upstream, resource…) or as matching criteria.
    pub fn decision(&self) -> Decision<'_> {
        let Route {
            name: _,
            // Counts what happens; decides nothing.
            metrics: _,
            line: _,
            methods: _,
            pattern: _,
            query: _,
            access,
            required,
            upstream,
            body,
            resource,
        } = self;
        Decision {
            access: *access,
            required: *required,
            upstream: *upstream,
            body: body.as_ref(),
            resource: resource.as_ref(),
        }
    }

    /// One request this route matches on its own (earlier routes aside):
    /// its first method (`GET` for any), a path from its pattern and a query
    /// from its query rule, both percent-encoded.
    pub fn example(&self) -> (Method, String, Option<String>) {
        let method = self
            .methods
            .as_ref()
            .and_then(|m| m.first())
            .cloned()
            .unwrap_or(Method::GET);
        (method, self.pattern.example(), self.query.example())
    }

    /// Whether the route matches, the path taken to end in `/` when `slash`.
    fn matches(
        &self,
        method: &Method,
        path: &NormalPath,
        slash: bool,
        query: Option<&str>,
    ) -> Result<bool, QueryError> {
        if let Some(methods) = &self.methods {
            if !methods.contains(method) {
                return Ok(false);
            }
        }
        if !self.pattern.matches_slash(path, slash) {
            return Ok(false);
        }
        self.query.check(query)
    }

    /// True when every request this route matches is matched by `earlier`.
    fn shadowed_by(&self, earlier: &Route) -> bool {
        let methods = match (&earlier.methods, &self.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(s)) => s.iter().all(|m| e.contains(m)),
        };
        methods && earlier.pattern.covers(&self.pattern) && earlier.query.covers(&self.query)
    }
}

/// The ordered rule set.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    list: Vec<Route>,
}

/// Why no route could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route matches this request")]
    NoMatch,
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The path ends in `/`, and is routed differently without it.
    #[error("path ends in '/' and is routed differently without it")]
    TrailingSlash,
}

/// A route whose pattern ends in `/` but whose example request is refused
/// for its slash: without the slash, `bare` (or no route) decides otherwise.
#[derive(Debug, Clone)]
pub struct SlashConflict<'a> {
    pub route: &'a Route,
    /// The request tried: method, path and query.
    pub example: String,
    /// The route the path matches without its slash, if any.
    pub bare: Option<&'a Route>,
}

/// `later` can never match because `earlier` comes first and takes all its requests.
#[derive(Debug, Clone, Copy)]
pub struct Shadow<'a> {
    pub later: &'a Route,
    pub earlier: &'a Route,
}

impl Routes {
    pub fn new(list: Vec<Route>) -> Routes {
        Routes { list }
    }

    /// The first route matching the request, in file order.
    ///
    /// A repeated query key listed by a candidate route is an error (400) rather
    /// than a non-match: a backend might read either copy. A path ending in `/`
    /// is also matched without it; if that match decides differently (or only
    /// one of the two matches), [`RouteError::TrailingSlash`].
    pub fn find(
        &self,
        method: &Method,
        path: &NormalPath,
        query: Option<&str>,
    ) -> Result<&Route, RouteError> {
        let slash = path.has_trailing_slash();
        let as_is = self.first(method, path, slash, query);
        if !slash {
            return as_is;
        }
        match (as_is, self.first(method, path, false, query)) {
            (Ok(route), Ok(bare)) if route.decision() == bare.decision() => Ok(route),
            (Err(RouteError::NoMatch), Err(RouteError::NoMatch)) => Err(RouteError::NoMatch),
            (Err(e @ RouteError::Query(_)), _) | (_, Err(e @ RouteError::Query(_))) => Err(e),
            _ => Err(RouteError::TrailingSlash),
        }
    }

    /// The first route matching, the path taken to end in `/` when `slash`.
    fn first(
        &self,
        method: &Method,
        path: &NormalPath,
        slash: bool,
        query: Option<&str>,
    ) -> Result<&Route, RouteError> {
        for route in &self.list {
            if route.matches(method, path, slash, query)? {
                return Ok(route);
            }
        }
        Err(RouteError::NoMatch)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every rule that an earlier rule makes unreachable (sound, not complete:
    /// a reported shadow is certain, an unusual overlap may go unreported).
    pub fn shadowed(&self) -> Vec<Shadow<'_>> {
        let mut out = Vec::new();
        for (i, later) in self.list.iter().enumerate() {
            if let Some(earlier) = self.list[..i].iter().find(|e| later.shadowed_by(e)) {
                out.push(Shadow { later, earlier });
            }
        }
        out
    }

    /// Routes whose pattern ends in `/` and whose example request (see
    /// [`Route::example`]) is refused for its trailing slash: such a route
    /// most likely never applies. Heuristic, from one request per route.
    pub fn slash_conflicts(&self) -> Vec<SlashConflict<'_>> {
        let mut out = Vec::new();
        for route in self.list.iter().filter(|r| r.pattern.has_trailing_slash()) {
            let (method, path, query) = route.example();
            let Ok(normal) = crate::path::normalise(&path) else {
                continue;
            };
            let found = self.find(&method, &normal, query.as_deref());
            if matches!(found, Err(RouteError::TrailingSlash)) {
                let bare = self.first(&method, &normal, false, query.as_deref()).ok();
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                out.push(SlashConflict {
                    route,
                    example: format!("{method} {path}{query}"),
                    bare,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalise;

    fn route(
        name: &str,
        methods: Option<&[&str]>,
        path: &str,
        query: &[(&str, &str)],
        access: Access,
    ) -> Route {
        let name: std::sync::Arc<str> = name.into();
        Route {
            metrics: crate::metrics::route(&name),
            name,
            line: 1,
            methods: methods.map(|m| {
                m.iter()
                    .map(|x| Method::from_bytes(x.as_bytes()).unwrap())
                    .collect()
            }),
            pattern: Pattern::parse(path).unwrap(),
            query: QueryRule::new(
                query
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            access,
            required: ScopeSet::EMPTY,
            upstream: Some(0),
            body: None,
            resource: None,
        }
    }

    fn git_rules() -> Routes {
        Routes::new(vec![
            route("admin", None, "/admin/**", &[], Access::Deny),
            route(
                "refs-read",
                Some(&["GET"]),
                "/{o}/{r}.git/info/refs",
                &[("service", "git-upload-pack")],
                Access::AppPassword,
            ),
            route(
                "refs-write",
                Some(&["GET"]),
                "/{o}/{r}.git/info/refs",
                &[("service", "git-receive-pack")],
                Access::AppPassword,
            ),
            route(
                "upload-pack",
                Some(&["POST"]),
                "/{o}/{r}.git/git-upload-pack",
                &[],
                Access::AppPassword,
            ),
            route("web", None, "/**", &[], Access::Web),
        ])
    }

    fn find<'a>(r: &'a Routes, m: &str, target: &str) -> Result<&'a str, RouteError> {
        let (p, q) = target
            .split_once('?')
            .map_or((target, None), |(p, q)| (p, Some(q)));
        let path = normalise(p).unwrap();
        r.find(&Method::from_bytes(m.as_bytes()).unwrap(), &path, q)
            .map(|r| &*r.name)
    }

    #[test]
    fn first_match_wins_in_file_order() {
        let r = git_rules();
        assert_eq!(find(&r, "GET", "/admin/users").unwrap(), "admin");
        assert_eq!(find(&r, "POST", "/admin").unwrap(), "admin");
        assert_eq!(
            find(&r, "GET", "/a/b.git/info/refs?service=git-upload-pack").unwrap(),
            "refs-read"
        );
        assert_eq!(
            find(&r, "GET", "/a/b.git/info/refs?service=git-receive-pack").unwrap(),
            "refs-write"
        );
        assert_eq!(
            find(&r, "POST", "/a/b.git/git-upload-pack").unwrap(),
            "upload-pack"
        );
        assert_eq!(find(&r, "GET", "/a/b.git/git-upload-pack").unwrap(), "web");
        assert_eq!(find(&r, "GET", "/a/b.git/info/refs").unwrap(), "web");
        assert_eq!(find(&r, "GET", "/").unwrap(), "web");
    }

    #[test]
    fn method_names_are_exact() {
        let r = git_rules();
        assert_eq!(
            find(&r, "get", "/a/b.git/info/refs?service=git-upload-pack").unwrap(),
            "web"
        );
    }

    #[test]
    fn repeated_listed_query_key_is_an_error() {
        let r = git_rules();
        assert!(matches!(
            find(
                &r,
                "GET",
                "/a/b.git/info/refs?service=git-upload-pack&service=git-receive-pack"
            ),
            Err(RouteError::Query(QueryError::Repeated { .. }))
        ));
    }

    #[test]
    fn body_scopes_pick_by_field_value() {
        let read = ScopeSet::EMPTY;
        let b = BodyScopes {
            field: "operation".into(),
            max_bytes: 64,
            values: vec![("download".into(), read)],
        };
        assert_eq!(
            b.required(br#"{"operation":"download","objects":[]}"#),
            Ok(read)
        );
        assert_eq!(
            b.required(br#"{"objects":[{"oid":"operation"}],"operation":"download"}"#),
            Ok(read)
        );
        for bad in [
            &br#"{"operation":"upload"}"#[..],
            br#"{"operation":1}"#,
            b"not json",
            br#"{"objects":[]}"#,
            br#"["operation","download"]"#,
            br#"{"operation":"download"} {"operation":"upload"}"#,
        ] {
            assert!(b.required(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn body_scopes_refuse_a_repeated_or_case_variant_field() {
        // Issue #21 item 2: backends differ on which copy they read.
        let b = BodyScopes {
            field: "operation".into(),
            max_bytes: 256,
            values: vec![
                ("download".into(), ScopeSet::EMPTY),
                ("upload".into(), ScopeSet::EMPTY),
            ],
        };
        for bad in [
            &br#"{"operation":"download","Operation":"upload","objects":[]}"#[..],
            br#"{"Operation":"upload","operation":"download"}"#,
            br#"{"operation":"upload","operation":"download"}"#,
            br#"{"operation":"download","operation":"download"}"#,
            br#"{"OPERATION":"upload","operation":"download"}"#,
            br#"{"operation":"download","oper\u0061tion":"upload"}"#,
            br#"{"operation":"download","Operation":null}"#,
            // Found by fuzz/body_scopes: invalid UTF-8 inside a skipped value.
            b"{\"operatiin\":\"\xffownload\",\"operation\":\"upload\"}",
            b"{\"operation\":\"download\",\"x\":\"\xc3\"}",
        ] {
            assert!(b.required(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let k = BodyScopes {
            field: "kind".into(),
            max_bytes: 64,
            values: vec![("a".into(), ScopeSet::EMPTY)],
        };
        // U+212A KELVIN SIGN folds to `k` in Go.
        assert!(k
            .required("{\"kind\":\"a\",\"\u{212a}ind\":\"b\"}".as_bytes())
            .is_err());
    }

    #[test]
    fn unmatched_is_no_match() {
        let r = Routes::new(vec![route("api", None, "/api/**", &[], Access::Public)]);
        assert_eq!(find(&r, "GET", "/other"), Err(RouteError::NoMatch));
        assert_eq!(find(&r, "GET", "/api").unwrap(), "api");
    }

    /// Issue #16: a trailing slash must not let a request be authorised by
    /// one route and read by the backend as another.
    #[test]
    fn trailing_slash_that_changes_the_decision_is_refused() {
        let r = git_rules();
        // Matched as refs-read without the slash, as web with it.
        assert_eq!(
            find(&r, "GET", "/a/b.git/info/refs/?service=git-upload-pack"),
            Err(RouteError::TrailingSlash)
        );
        assert_eq!(
            find(&r, "POST", "/a/b.git/git-upload-pack/"),
            Err(RouteError::TrailingSlash)
        );
        // `/admin/**` takes the slash either way; so does the web catch-all.
        assert_eq!(find(&r, "GET", "/admin/").unwrap(), "admin");
        assert_eq!(find(&r, "GET", "/owner/repo/").unwrap(), "web");
        assert_eq!(find(&r, "GET", "/a/b.git/info/").unwrap(), "web");

        let r = Routes::new(vec![
            route("admin", None, "/admin", &[], Access::Deny),
            route("web", None, "/**", &[], Access::Web),
        ]);
        assert_eq!(find(&r, "GET", "/admin").unwrap(), "admin");
        assert_eq!(find(&r, "GET", "/admin/"), Err(RouteError::TrailingSlash));
        assert_eq!(find(&r, "GET", "//admin//"), Err(RouteError::TrailingSlash));
        assert_eq!(find(&r, "GET", "/admin/x/").unwrap(), "web");
        assert_eq!(find(&r, "GET", "/").unwrap(), "web");
    }

    #[test]
    fn trailing_slash_with_one_match_missing() {
        let r = Routes::new(vec![route("api", None, "/api", &[], Access::Public)]);
        assert_eq!(find(&r, "GET", "/api").unwrap(), "api");
        assert_eq!(find(&r, "GET", "/api/"), Err(RouteError::TrailingSlash));
        assert_eq!(find(&r, "GET", "/other/"), Err(RouteError::NoMatch));
        let r = Routes::new(vec![route("dir", None, "/dir/", &[], Access::Public)]);
        assert_eq!(
            find(&r, "GET", "/dir/").unwrap_err(),
            RouteError::TrailingSlash
        );
        assert_eq!(find(&r, "GET", "/dir"), Err(RouteError::NoMatch));
    }

    #[test]
    fn trailing_slash_with_the_same_decision_uses_the_route_as_is() {
        let r = Routes::new(vec![
            route("bare", None, "/x", &[], Access::Public),
            route("slash", None, "/x/", &[], Access::Public),
        ]);
        assert_eq!(find(&r, "GET", "/x").unwrap(), "bare");
        assert_eq!(find(&r, "GET", "/x/").unwrap(), "slash");

        // Each part of the decision counts.
        let mut scoped = route("slash", None, "/x/", &[], Access::Public);
        let vocabulary =
            crate::scopes::Scopes::new(&[("a".to_owned(), vec![])].into_iter().collect()).unwrap();
        scoped.required = vocabulary.required(&["a".to_owned()]).unwrap();
        let mut elsewhere = route("slash", None, "/x/", &[], Access::Public);
        elsewhere.upstream = Some(1);
        let mut inspected = route("slash", None, "/x/", &[], Access::Public);
        inspected.body = Some(BodyScopes {
            field: "operation".into(),
            max_bytes: 64,
            values: vec![],
        });
        let web = route("slash", None, "/x/", &[], Access::Web);
        for other in [scoped, elsewhere, inspected, web] {
            let r = Routes::new(vec![
                route("bare", None, "/x", &[], Access::Public),
                other.clone(),
            ]);
            assert_eq!(
                find(&r, "GET", "/x/"),
                Err(RouteError::TrailingSlash),
                "{other:?}"
            );
        }
    }

    #[test]
    fn trailing_slash_query_errors_win() {
        let r = git_rules();
        assert!(matches!(
            find(
                &r,
                "GET",
                "/a/b.git/info/refs/?service=git-upload-pack&service=git-upload-pack"
            ),
            Err(RouteError::Query(QueryError::Repeated { .. }))
        ));
    }

    #[test]
    fn slash_conflicts_name_routes_that_never_apply() {
        let r = Routes::new(vec![
            route(
                "user",
                Some(&["GET"]),
                "/api/user/",
                &[],
                Access::AppPassword,
            ),
            route("same-a", None, "/same/", &[], Access::Public),
            route("same-b", None, "/same", &[], Access::Public),
            route(
                "refs",
                None,
                "/{o}/info/refs/",
                &[("service", "a b&c")],
                Access::Public,
            ),
            route("web", None, "/**", &[], Access::Web),
        ]);
        let c = r.slash_conflicts();
        let got: Vec<(&str, &str, Option<&str>)> = c
            .iter()
            .map(|c| (&*c.route.name, c.example.as_str(), c.bare.map(|b| &*b.name)))
            .collect();
        assert_eq!(
            got,
            [
                ("user", "GET /api/user/", Some("web")),
                ("refs", "GET /x/info/refs/?service=a%20b%26c", Some("web")),
            ]
        );
        assert!(git_rules().slash_conflicts().is_empty());
    }

    #[test]
    fn shadowing_is_reported() {
        let r = Routes::new(vec![
            route("all", None, "/**", &[], Access::Web),
            route("api", Some(&["GET"]), "/api/{x}", &[], Access::Public),
        ]);
        let s = r.shadowed();
        assert_eq!(s.len(), 1);
        assert_eq!(&*s[0].later.name, "api");
        assert_eq!(&*s[0].earlier.name, "all");
    }

    #[test]
    fn narrower_earlier_rule_does_not_shadow() {
        let r = git_rules();
        assert!(
            r.shadowed().is_empty(),
            "{:?}",
            r.shadowed()
                .iter()
                .map(|s| &s.later.name)
                .collect::<Vec<_>>()
        );
        let r = Routes::new(vec![
            route("get", Some(&["GET"]), "/**", &[], Access::Public),
            route("any", None, "/x", &[], Access::Deny),
        ]);
        assert!(r.shadowed().is_empty());
        let r = Routes::new(vec![
            route("q", None, "/**", &[("a", "1")], Access::Public),
            route("plain", None, "/x", &[], Access::Deny),
        ]);
        assert!(r.shadowed().is_empty());
    }
}
