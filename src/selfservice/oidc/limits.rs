//! What bounds the sign-ins the page starts, each a pre-login record written
//! to the store: which requests may start one at all ([`navigation`]), how
//! many anonymous visitors may start per client address and in all, and how
//! many step-ups a signed-in user may start ([`SignInLimits`]). Never
//! touches the store, never logs.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::throttle::{Limit, Throttle, ThrottleConfig};
use crate::clock::unix_now;
use crate::oidc::config::SIGN_IN_WINDOW;
use crate::oidc::OidcConfig;

/// Client addresses (IPv6: /64s) the per-address sign-in limit tracks;
/// past that, new ones share one bucket (failing closed).
const TRACKED_ADDRESSES: usize = 65_536;
/// Step-ups one signed-in user may start per [`SIGN_IN_WINDOW`]. One is
/// needed at most once per `reauth_after`; the rest are abandoned ones
/// (a closed tab, a provider that failed) started again.
pub(super) const STEP_UPS_PER_USER: u32 = 10;
/// Users the step-up limit tracks; they are signed in, so they are real
/// accounts, not whatever an anonymous flood makes up.
const TRACKED_USERS: usize = 65_536;

/// What bounds the pre-login records this gateway writes. Anonymous
/// visitors' sign-ins: `sign_ins_per_address` per client address and
/// [`SIGN_IN_WINDOW`] (the brute-force limiter's buckets, keyed as it keys
/// addresses), and `max_sign_ins_in_progress` records not yet expired.
/// Step-ups of signed-in users draw on neither (a user renewing a sign-in
/// must not lock their address's neighbours out, nor wait behind a flood
/// of anonymous sign-ins): [`STEP_UPS_PER_USER`] per user and window.
pub(super) struct SignInLimits {
    per_address: Arc<Throttle>,
    /// Keyed by user name alone: its per-(user, address) buckets all use
    /// one fixed address, its per-address buckets are off.
    per_user: Arc<Throttle>,
    /// The expiry (unix seconds) of each record this gateway wrote that has
    /// not expired yet, oldest first; one taken by its callback still counts
    /// until it would have expired (the count errs on the safe side).
    in_progress: Mutex<VecDeque<u64>>,
    max_in_progress: usize,
}

/// Which of [`SignInLimits`] refused a sign-in, and for how long.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refused {
    /// `sign_ins_per_address` spent for this client address.
    PerAddress(Duration),
    /// `max_sign_ins_in_progress` reached on this gateway.
    InProgress(Duration),
    /// [`STEP_UPS_PER_USER`] spent by this signed-in user.
    PerUser(Duration),
}

impl std::fmt::Debug for SignInLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLimits")
            .field("max_in_progress", &self.max_in_progress)
            .finish_non_exhaustive()
    }
}

impl SignInLimits {
    pub(super) fn new(config: &OidcConfig) -> SignInLimits {
        SignInLimits {
            per_address: Arc::new(Throttle::new(ThrottleConfig {
                // No user before a sign-in: the per-user buckets stay off.
                per_user_addr: Limit {
                    burst: 0,
                    per: Duration::ZERO,
                },
                per_addr: Limit {
                    burst: config.sign_ins_per_address,
                    per: SIGN_IN_WINDOW,
                },
                max_entries: TRACKED_ADDRESSES,
            })),
            per_user: Arc::new(Throttle::new(ThrottleConfig {
                per_user_addr: Limit {
                    burst: STEP_UPS_PER_USER,
                    per: SIGN_IN_WINDOW,
                },
                per_addr: Limit {
                    burst: 0,
                    per: Duration::ZERO,
                },
                max_entries: TRACKED_USERS,
            })),
            in_progress: Mutex::new(VecDeque::new()),
            max_in_progress: usize::try_from(config.max_sign_ins_in_progress).unwrap_or(usize::MAX),
        }
    }

    /// Takes a place for one pre-login record from `client`, valid until
    /// `expires`, or says which limit refuses it and for how long.
    pub(super) fn admit(&self, client: IpAddr, expires: u64) -> Result<(), Refused> {
        let now = unix_now();
        let mut live = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        while live.front().is_some_and(|&e| e <= now) {
            live.pop_front();
        }
        if live.len() >= self.max_in_progress {
            let wait = live.front().map_or(1, |e| e.saturating_sub(now));
            return Err(Refused::InProgress(Duration::from_secs(wait)));
        }
        match self.per_address.reserve("", client, Instant::now()) {
            Ok(token) => token.keep(),
            Err(wait) => return Err(Refused::PerAddress(wait)),
        }
        live.push_back(expires);
        Ok(())
    }

    /// Takes one of `user`'s step-ups, or says how long until one is back.
    /// `user` is signed in: neither their address's share nor a place in
    /// progress is taken.
    pub(super) fn admit_step_up(&self, user: &str) -> Result<(), Refused> {
        let anywhere = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        match self.per_user.reserve(user, anywhere, Instant::now()) {
            Ok(token) => {
                token.keep();
                Ok(())
            }
            Err(wait) => Err(Refused::PerUser(wait)),
        }
    }
}

/// Whether a request is a browser's top-level navigation, as far as its
/// Fetch Metadata tells (a browser without it sends none: yes): not an
/// `<img>`, a script, a frame or a prefetch that another site can make
/// every visitor's browser send.
pub(super) fn navigation(headers: &http::HeaderMap) -> bool {
    let is = |name: &str, want: &[u8]| headers.get(name).is_none_or(|v| v.as_bytes() == want);
    is("sec-fetch-dest", b"document")
        && is("sec-fetch-mode", b"navigate")
        && headers.get("sec-purpose").is_none()
        && !headers
            .get("purpose")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"prefetch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: u32, in_progress: u32) -> SignInLimits {
        let raw = crate::oidc::RawOidc {
            issuer: "https://id.example/".into(),
            client_id: "passgate".into(),
            sign_ins_per_address: Some(per_address),
            max_sign_ins_in_progress: Some(in_progress),
            ..crate::oidc::RawOidc::default()
        };
        let config = raw
            .build(std::path::Path::new("/"), |_| None)
            .expect("config");
        SignInLimits::new(&config)
    }

    #[test]
    fn per_address_then_in_all_and_expired_places_come_back() {
        let l = limits(2, 3);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let later = unix_now() + 600;
        assert!(l.admit(a, later).is_ok());
        assert!(l.admit(a, later).is_ok());
        assert!(matches!(l.admit(a, later), Err(Refused::PerAddress(w)) if w > Duration::ZERO));
        // The refusal took no place in progress.
        assert!(l.admit(b, later).is_ok());
        assert!(matches!(l.admit(b, later), Err(Refused::InProgress(w)) if w.as_secs() >= 599));
        // Places whose record has expired are free again.
        let l = limits(10, 1);
        assert!(l.admit(a, unix_now()).is_ok());
        assert!(l.admit(b, later).is_ok());
    }

    #[test]
    fn step_ups_count_per_user_not_per_address_nor_in_progress() {
        let l = limits(1, 1);
        let (a, later) = ("192.0.2.1".parse().unwrap(), unix_now() + 600);
        assert!(l.admit(a, later).is_ok());
        // The address's share and the places in progress are spent; a
        // signed-in user still steps up, up to their own share.
        for _ in 0..STEP_UPS_PER_USER {
            assert!(l.admit_step_up("alice").is_ok());
        }
        assert!(matches!(l.admit_step_up("alice"), Err(Refused::PerUser(w)) if w > Duration::ZERO));
        assert!(l.admit_step_up("bob").is_ok());
        // And step-ups took nothing from anonymous sign-ins.
        let l = limits(1, 1);
        for _ in 0..STEP_UPS_PER_USER {
            assert!(l.admit_step_up("alice").is_ok());
        }
        assert!(l.admit(a, later).is_ok());
    }

    #[test]
    fn only_top_level_navigations() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, http::HeaderValue::from_static(v));
            }
            navigation(&m)
        };
        assert!(h(&[]));
        assert!(h(&[
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "navigate")
        ]));
        assert!(!h(&[("sec-fetch-dest", "image")]));
        assert!(!h(&[
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-mode", "navigate")
        ]));
        assert!(!h(&[
            ("sec-fetch-dest", "document"),
            ("sec-fetch-mode", "cors")
        ]));
        assert!(!h(&[("sec-purpose", "prefetch;prerender")]));
        assert!(!h(&[("purpose", "Prefetch")]));
    }
}
