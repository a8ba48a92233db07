//! A route's `resource`: the repository (`OWNER/NAME`) a request on that
//! route touches, written as a template of the route's path captures, e.g.
//! `resource = "{owner}/{repo}"` on `path = "/{owner}/{repo}.git/info/refs"`.
//!
//! Checked at load: the template must name only captures of the route's
//! path and have the `OWNER/NAME` shape (one `/` between two non-empty
//! halves). Rendered per request only for a password limited to some
//! repositories, from the decoded segments of the normalised path, so the
//! resource is exactly what the backend is sent: a capture never holds a
//! `/` (encoded slashes are refused before routing) and is never empty.

use std::fmt;

use super::pattern::{CaptureAt, Pattern};
use crate::path::NormalPath;

/// Why a `resource` template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("must look like \"{{owner}}/{{repo}}\": one '/' between two non-empty halves")]
    NotOwnerName,
    #[error("unbalanced or empty brace")]
    UnbalancedBrace,
    #[error(
        "names the capture {{{name}}}, which the route's path does not have (its path: {path})"
    )]
    UnknownCapture { name: String, path: String },
    #[error("must name at least one capture of the route's path")]
    NoCapture,
    #[error("character {0:?} not allowed")]
    BadCharacter(char),
}

/// A compiled `resource` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture(CaptureAt),
}

impl Resource {
    /// Compiles `template` against the captures of the route's `pattern`.
    pub fn parse(template: &str, pattern: &Pattern) -> Result<Resource, ResourceError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(c) = rest.chars().next() {
            match c {
                '{' => {
                    let close = rest.find('}').ok_or(ResourceError::UnbalancedBrace)?;
                    let name = rest.get(1..close).unwrap_or_default();
                    if name.is_empty() || name.contains('{') {
                        return Err(ResourceError::UnbalancedBrace);
                    }
                    let at =
                        pattern
                            .capture(name)
                            .ok_or_else(|| ResourceError::UnknownCapture {
                                name: name.to_owned(),
                                path: pattern.as_str().to_owned(),
                            })?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Capture(at));
                    rest = rest.get(close + 1..).unwrap_or_default();
                }
                '}' => return Err(ResourceError::UnbalancedBrace),
                c if c.is_control() || c.is_whitespace() || matches!(c, '*' | '%' | '\\') => {
                    return Err(ResourceError::BadCharacter(c))
                }
                c => {
                    literal.push(c);
                    rest = rest.get(c.len_utf8()..).unwrap_or_default();
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, Part::Capture(_))) {
            return Err(ResourceError::NoCapture);
        }
        let slashes: usize = parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.matches('/').count(),
                Part::Capture(_) => 0,
            })
            .sum();
        let starts = matches!(parts.first(), Some(Part::Literal(l)) if l.starts_with('/'));
        let ends = matches!(parts.last(), Some(Part::Literal(l)) if l.ends_with('/'));
        if slashes != 1 || starts || ends {
            return Err(ResourceError::NotOwnerName);
        }
        Ok(Resource {
            source: template.to_owned(),
            parts,
        })
    }

    /// The resource a path matched by the route touches. `None` only if the
    /// path was not matched by the route's pattern (a caller bug).
    pub fn render(&self, path: &NormalPath) -> Option<String> {
        let mut out = String::with_capacity(32);
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Capture(at) => out.push_str(at.value(path)?),
            }
        }
        Some(out)
    }

    /// The template as written in the config file.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::normalise;

    fn render(pattern: &str, template: &str, path: &str) -> Option<String> {
        let p = Pattern::parse(pattern).unwrap();
        let r = Resource::parse(template, &p).unwrap();
        let path = normalise(path).unwrap();
        assert!(p.matches(&path), "{path}");
        r.render(&path)
    }

    #[test]
    fn renders_captures_without_their_literals() {
        assert_eq!(
            render(
                "/{owner}/{repo}.git/info/refs",
                "{owner}/{repo}",
                "/alice/a.git/info/refs"
            )
            .as_deref(),
            Some("alice/a")
        );
        assert_eq!(
            render(
                "/api/v1/repos/{o}/{r}/**",
                "{o}/{r}",
                "/api/v1/repos/bob/x/issues/1"
            )
            .as_deref(),
            Some("bob/x")
        );
        assert_eq!(
            render("/g/{repo}", "team/{repo}", "/g/r%20x").as_deref(),
            Some("team/r x"),
            "decoded, as the segment is matched"
        );
    }

    #[test]
    fn templates_are_checked_against_the_path() {
        let p = Pattern::parse("/{owner}/{repo}.git/**").unwrap();
        assert!(matches!(
            Resource::parse("{owner}/{name}", &p),
            Err(ResourceError::UnknownCapture { .. })
        ));
        for (bad, err) in [
            ("{owner}", ResourceError::NotOwnerName),
            ("{owner}/{repo}/x", ResourceError::NotOwnerName),
            ("/{owner}/{repo}", ResourceError::NotOwnerName),
            ("{owner}/", ResourceError::NotOwnerName),
            ("alice/bob", ResourceError::NoCapture),
            ("{owner/{repo}", ResourceError::UnbalancedBrace),
            ("{}/{repo}", ResourceError::UnbalancedBrace),
            ("{owner}}/{repo}", ResourceError::UnbalancedBrace),
            ("{owner}/*", ResourceError::BadCharacter('*')),
        ] {
            assert_eq!(Resource::parse(bad, &p), Err(err), "{bad}");
        }
        assert!(Resource::parse("{owner}/{repo}", &p).is_ok());
        assert!(Resource::parse("mirror-{owner}/{repo}", &p).is_ok());
    }
}
