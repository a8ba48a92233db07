//! `[selfservice.oidc]`: the raw TOML table and its checked form.
//!
//! Parse, don't validate: [`RawOidc::build`] turns the table into an
//! [`OidcConfig`] of ready values (a parsed issuer URL, the client secret
//! read from its file, durations) or names the key that is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::http::loopback_host;

/// `[selfservice.oidc]` as written (`Default`: every optional key absent,
/// for building one in code).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_file: Option<String>,
    #[serde(default)]
    pub username_claim: Option<String>,
    #[serde(default)]
    pub reauth_after: Option<String>,
    #[serde(default)]
    pub session_ttl: Option<String>,
    #[serde(default)]
    pub allowed_groups: Option<Vec<String>>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub sign_in_timeout: Option<String>,
    #[serde(default)]
    pub sign_ins_per_address: Option<u32>,
    #[serde(default)]
    pub max_sign_ins_in_progress: Option<u32>,
}

/// `[selfservice.oidc]`, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer exactly as configured (it must equal the `iss` of tokens and
    /// the `issuer` of the discovery document, trailing slash included).
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<String>,
    pub username_claim: String,
    pub reauth_after: Duration,
    pub session_ttl: Duration,
    /// Empty: everyone the issuer signs in may use the page.
    pub allowed_groups: Vec<String>,
    pub ca_file: Option<PathBuf>,
    /// How long a sign-in at the issuer may take: the life of a pre-login
    /// record and its cookie.
    pub sign_in_timeout: Duration,
    /// Sign-ins one client address (IPv6: its /64) may start per
    /// [`SIGN_IN_WINDOW`]: each writes a pre-login record to the store.
    pub sign_ins_per_address: u32,
    /// Sign-ins started and not yet expired, at most, on this gateway.
    pub max_sign_ins_in_progress: u32,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("username_claim", &self.username_claim)
            .field("reauth_after", &self.reauth_after)
            .field("session_ttl", &self.session_ttl)
            .field("allowed_groups", &self.allowed_groups)
            .field("ca_file", &self.ca_file)
            .field("sign_in_timeout", &self.sign_in_timeout)
            .field("sign_ins_per_address", &self.sign_ins_per_address)
            .field("max_sign_ins_in_progress", &self.max_sign_ins_in_progress)
            .finish()
    }
}

/// A wrong key in `[selfservice.oidc]`: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfigError {
    /// The full key, e.g. `selfservice.oidc.issuer`.
    pub key: &'static str,
    pub message: String,
}

pub const DEFAULT_USERNAME_CLAIM: &str = "preferred_username";
pub const DEFAULT_REAUTH_AFTER: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The time to sign in at the issuer, by default.
pub const DEFAULT_SIGN_IN_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest `sign_in_timeout`: a pre-login record is a store write an
/// anonymous visitor causes, so it must not live for long.
pub const MAX_SIGN_IN_TIMEOUT: Duration = Duration::from_secs(3600);
/// `sign_ins_per_address` counts sign-ins started in this window.
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(600);
pub const DEFAULT_SIGN_INS_PER_ADDRESS: u32 = 30;
pub const DEFAULT_MAX_SIGN_INS_IN_PROGRESS: u32 = 10_000;
/// The largest `max_sign_ins_in_progress` (the gateway keeps one time per
/// sign-in in progress in memory to count them).
pub const MAX_SIGN_INS_IN_PROGRESS: u32 = 1_000_000;

impl RawOidc {
    /// Checks every key; paths are relative to `base` (the config file's
    /// directory). `parse_duration` is the config's own duration syntax.
    pub fn build(
        self,
        base: &Path,
        parse_duration: impl Fn(&str) -> Option<Duration>,
    ) -> Result<OidcConfig, OidcConfigError> {
        let err = |key, message: String| Err(OidcConfigError { key, message });
        let issuer = self.issuer.trim().to_owned();
        match issuer.parse::<http::Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("https")
                    && uri.host().is_some()
                    && uri.query().is_none() => {}
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && uri.host().is_some_and(loopback_host)
                    && uri.query().is_none() => {}
            Ok(uri) if uri.scheme_str() == Some("http") => {
                return err(
                    "selfservice.oidc.issuer",
                    format!(
                        "\"{issuer}\": http:// is allowed only for a loopback issuer; use https://"
                    ),
                )
            }
            _ => {
                return err(
                    "selfservice.oidc.issuer",
                    format!(
                        "\"{issuer}\" is not an https:// URL such as \"https://git.example.com/\""
                    ),
                )
            }
        }
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            return err("selfservice.oidc.client_id", "must not be empty".into());
        }
        let client_secret = match &self.client_secret_file {
            None => None,
            Some(file) => {
                let path = base.join(file);
                match std::fs::read_to_string(&path) {
                    Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                    Ok(_) => {
                        return err(
                            "selfservice.oidc.client_secret_file",
                            format!("{} is empty", path.display()),
                        )
                    }
                    Err(e) => {
                        return err(
                            "selfservice.oidc.client_secret_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    }
                }
            }
        };
        let username_claim = self
            .username_claim
            .unwrap_or_else(|| DEFAULT_USERNAME_CLAIM.to_owned());
        if username_claim.is_empty() {
            return err(
                "selfservice.oidc.username_claim",
                "must not be empty".into(),
            );
        }
        let duration = |key, value: Option<String>, default| match value {
            None => Ok(default),
            Some(s) => match parse_duration(&s) {
                Some(d) if !d.is_zero() => Ok(d),
                _ => Err(OidcConfigError {
                    key,
                    message: format!("\"{s}\" is not a positive duration such as \"10m\""),
                }),
            },
        };
        let reauth_after = duration(
            "selfservice.oidc.reauth_after",
            self.reauth_after,
            DEFAULT_REAUTH_AFTER,
        )?;
        let session_ttl = duration(
            "selfservice.oidc.session_ttl",
            self.session_ttl,
            DEFAULT_SESSION_TTL,
        )?;
        let sign_in_timeout = duration(
            "selfservice.oidc.sign_in_timeout",
            self.sign_in_timeout,
            DEFAULT_SIGN_IN_TIMEOUT,
        )?;
        if sign_in_timeout > MAX_SIGN_IN_TIMEOUT {
            return err(
                "selfservice.oidc.sign_in_timeout",
                "must be at most 1h".into(),
            );
        }
        let sign_ins_per_address = self
            .sign_ins_per_address
            .unwrap_or(DEFAULT_SIGN_INS_PER_ADDRESS);
        if sign_ins_per_address == 0 {
            return err(
                "selfservice.oidc.sign_ins_per_address",
                "must be at least 1".into(),
            );
        }
        let max_sign_ins_in_progress = self
            .max_sign_ins_in_progress
            .unwrap_or(DEFAULT_MAX_SIGN_INS_IN_PROGRESS);
        if !(1..=MAX_SIGN_INS_IN_PROGRESS).contains(&max_sign_ins_in_progress) {
            return err(
                "selfservice.oidc.max_sign_ins_in_progress",
                format!("must be between 1 and {MAX_SIGN_INS_IN_PROGRESS}"),
            );
        }
        let allowed_groups = self.allowed_groups.unwrap_or_default();
        if allowed_groups.iter().any(String::is_empty) {
            return err(
                "selfservice.oidc.allowed_groups",
                "a group name must not be empty".into(),
            );
        }
        let ca_file = self.ca_file.map(|f| base.join(f));
        if let Some(path) = &ca_file {
            if let Err(e) = super::http::HttpClient::new(Some(path)) {
                return err("selfservice.oidc.ca_file", e.to_string());
            }
        }
        Ok(OidcConfig {
            issuer,
            client_id: self.client_id,
            client_secret,
            username_claim,
            reauth_after,
            session_ttl,
            allowed_groups,
            ca_file,
            sign_in_timeout,
            sign_ins_per_address,
            max_sign_ins_in_progress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(issuer: &str) -> RawOidc {
        RawOidc {
            issuer: issuer.into(),
            client_id: "passgate".into(),
            ..RawOidc::default()
        }
    }

    fn secs(s: &str) -> Option<Duration> {
        s.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
    }

    #[test]
    fn issuer_is_https_or_loopback_http() {
        let base = Path::new("/");
        assert!(raw("https://git.example.com/").build(base, secs).is_ok());
        assert!(raw("http://127.0.0.1:3000").build(base, secs).is_ok());
        assert!(raw("http://localhost:3000/").build(base, secs).is_ok());
        for bad in [
            "http://git.example.com/",
            "git.example.com",
            "",
            "ftp://x/",
            "https://x/?a=b",
        ] {
            let e = raw(bad).build(base, secs).unwrap_err();
            assert_eq!(e.key, "selfservice.oidc.issuer", "{bad}");
        }
    }

    #[test]
    fn defaults_and_durations() {
        let c = raw("https://id.example/")
            .build(Path::new("/"), secs)
            .unwrap();
        assert_eq!(c.username_claim, "preferred_username");
        assert_eq!(c.reauth_after, DEFAULT_REAUTH_AFTER);
        assert_eq!(c.session_ttl, DEFAULT_SESSION_TTL);
        let mut r = raw("https://id.example/");
        r.reauth_after = Some("0s".into());
        assert_eq!(
            r.build(Path::new("/"), secs).unwrap_err().key,
            "selfservice.oidc.reauth_after"
        );
    }

    #[test]
    fn sign_in_bounds() {
        let c = raw("https://id.example/")
            .build(Path::new("/"), secs)
            .unwrap();
        assert_eq!(c.sign_in_timeout, DEFAULT_SIGN_IN_TIMEOUT);
        assert_eq!(c.sign_ins_per_address, DEFAULT_SIGN_INS_PER_ADDRESS);
        assert_eq!(c.max_sign_ins_in_progress, DEFAULT_MAX_SIGN_INS_IN_PROGRESS);
        let build = |f: &dyn Fn(&mut RawOidc)| {
            let mut r = raw("https://id.example/");
            f(&mut r);
            r.build(Path::new("/"), secs).map_err(|e| e.key)
        };
        assert_eq!(
            build(&|r| r.sign_in_timeout = Some("3601s".into())).unwrap_err(),
            "selfservice.oidc.sign_in_timeout"
        );
        assert_eq!(
            build(&|r| r.sign_ins_per_address = Some(0)).unwrap_err(),
            "selfservice.oidc.sign_ins_per_address"
        );
        for bad in [0, MAX_SIGN_INS_IN_PROGRESS + 1] {
            assert_eq!(
                build(&|r| r.max_sign_ins_in_progress = Some(bad)).unwrap_err(),
                "selfservice.oidc.max_sign_ins_in_progress"
            );
        }
        assert!(build(&|r| r.sign_in_timeout = Some("2s".into())).is_ok());
    }

    #[test]
    fn missing_secret_file_is_named() {
        let mut r = raw("https://id.example/");
        r.client_secret_file = Some("/nonexistent/secret".into());
        let e = r.build(Path::new("/"), secs).unwrap_err();
        assert_eq!(e.key, "selfservice.oidc.client_secret_file");
        assert!(e.message.contains("/nonexistent/secret"), "{}", e.message);
    }
}
