//! Limits on one app password: the repositories it may touch (`--repo`) and
//! the client addresses it may come from (`--allow-from`).
//!
//! Pure: parsing what a user typed into the stored form, and the two checks
//! made on every request a limited password authorises. An empty list means
//! "no limit", so records written before limits existed keep working.
//!
//! Repositories are `OWNER/NAME` or `OWNER/*`, compared exactly (case
//! included) with the resource a route names (`routes/resource.rs`): a
//! backend that folds case sees a refusal, never a wider grant. `OWNER/*`
//! covers every repository of exactly that owner: `alice/*` does not cover
//! `alice2/x` or `alic/x`.

use std::net::IpAddr;

use ipnet::IpNet;

/// Longest owner or repository name accepted (each half of `OWNER/NAME`).
const MAX_PART: usize = 255;

/// Why a `--repo` or `--allow-from` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "invalid --repo {0:?}: use OWNER/NAME or OWNER/* (each part 1-255 characters, \
         without '/', spaces, control characters, '%', '{{', '}}' or '*' other than a whole NAME)"
    )]
    BadRepo(String),
    #[error("invalid --repo {0:?}: give the repository without \".git\" ({1})")]
    GitSuffix(String, String),
    #[error("invalid --allow-from {0:?}: use an address or a CIDR block such as 192.0.2.0/24")]
    BadCidr(String),
}

/// Checks one `--repo` value and returns it as stored.
pub fn parse_repo(text: &str) -> Result<String, LimitError> {
    let bad = || LimitError::BadRepo(text.to_owned());
    let (owner, name) = text.split_once('/').ok_or_else(bad)?;
    if !valid_part(owner) || !(name == "*" || valid_part(name)) {
        return Err(bad());
    }
    if let Some(stem) = name.strip_suffix(".git") {
        return Err(LimitError::GitSuffix(
            text.to_owned(),
            format!("{owner}/{stem}"),
        ));
    }
    Ok(text.to_owned())
}

/// Checks one `--allow-from` value: a CIDR block, or a single address
/// (a /32 or /128). Host bits are cleared (`192.0.2.7/24` → `192.0.2.0/24`);
/// an IPv4-mapped IPv6 block is stored as the IPv4 block it means.
pub fn parse_cidr(text: &str) -> Result<IpNet, LimitError> {
    let bad = || LimitError::BadCidr(text.to_owned());
    let trimmed = text.trim();
    let net = match trimmed.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(trimmed.parse::<IpAddr>().map_err(|_| bad())?),
    };
    let net = match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| bad())?
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    };
    Ok(net.trunc())
}

/// Whether `resource` (`OWNER/NAME`, as a route renders it) is one of `repos`.
/// An empty list is no limit.
pub fn repo_allowed(repos: &[Box<str>], resource: &str) -> bool {
    repos.is_empty() || repos.iter().any(|r| repo_covers(r, resource))
}

/// Whether the client address is within `nets`. An empty list is no limit.
/// The address is compared in its canonical form (`::ffff:a.b.c.d` as IPv4).
pub fn addr_allowed(nets: &[IpNet], addr: IpAddr) -> bool {
    // Most passwords have no limit: answered without canonicalising.
    nets.is_empty() || {
        let addr = addr.to_canonical();
        nets.iter().any(|n| n.contains(&addr))
    }
}

/// One stored entry against one rendered resource.
fn repo_covers(entry: &str, resource: &str) -> bool {
    match entry.strip_suffix("/*") {
        // `alice/*` covers `alice/x`: exactly the owner, then a non-empty
        // name without a further slash.
        Some(owner) => resource
            .strip_prefix(owner)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/')),
        None => entry == resource,
    }
}

fn valid_part(part: &str) -> bool {
    let len = part.chars().count();
    (1..=MAX_PART).contains(&len)
        && part != "."
        && part != ".."
        && !part.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '/' | '%' | '{' | '}' | '*' | '\\')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repos(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|r| Box::from(*r)).collect()
    }

    #[test]
    fn repo_values() {
        for ok in ["alice/a", "alice/*", "Org-1/repo.name", "ü/ñ"] {
            assert_eq!(parse_repo(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "alice",
            "/a",
            "alice/",
            "a/b/c",
            "*/a",
            "al*/a",
            "alice/a*",
            "alice/ a",
            "alice/a%2f",
            "alice/..",
            "./a",
            "alice/{x}",
            "alice/a\n",
        ] {
            assert!(parse_repo(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_repo("alice/a.git"),
            Err(LimitError::GitSuffix(
                "alice/a.git".into(),
                "alice/a".into()
            ))
        );
    }

    #[test]
    fn owner_star_covers_that_owner_only() {
        let r = repos(&["alice/*"]);
        assert!(repo_allowed(&r, "alice/a"));
        assert!(repo_allowed(&r, "alice/b"));
        for other in [
            "alice2/a", "alic/a", "Alice/a", "alice/", "bob/a", "xalice/a",
        ] {
            assert!(!repo_allowed(&r, other), "{other}");
        }
    }

    #[test]
    fn exact_repos_match_exactly() {
        let r = repos(&["alice/a", "bob/b"]);
        assert!(repo_allowed(&r, "alice/a"));
        assert!(repo_allowed(&r, "bob/b"));
        for other in ["alice/b", "alice/A", "alice/a.git", "alice/ab", "bob/a"] {
            assert!(!repo_allowed(&r, other), "{other}");
        }
        assert!(repo_allowed(&[], "anything/at-all"), "no list, no limit");
    }

    #[test]
    fn cidr_values() {
        assert_eq!(
            parse_cidr("192.0.2.7/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(parse_cidr("127.0.0.2").unwrap().to_string(), "127.0.0.2/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.0/8/8", "10.0.0"] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_compared_canonically() {
        let nets = vec![parse_cidr("127.0.0.2/32").unwrap()];
        assert!(addr_allowed(&nets, "127.0.0.2".parse().unwrap()));
        assert!(addr_allowed(&nets, "::ffff:127.0.0.2".parse().unwrap()));
        assert!(!addr_allowed(&nets, "127.0.0.3".parse().unwrap()));
        assert!(addr_allowed(&[], "203.0.113.9".parse().unwrap()));
    }
}
