//! OpenID Connect sign-in against a real provider (node `oidc-provider`,
//! see `oidc/provider.rs`): the relying party in `passgate::oidc` signs users
//! in through the provider's real login and consent forms, and refuses every
//! forged or replayed answer the provider's harness can produce.

mod browser;
mod page;
mod prelogin;
mod provider;
mod step_up;

use std::time::Duration;

use passgate::oidc::{Oidc, Pending, RawOidc, SignIn, SignInError};

use self::provider::{Agent, Callback, Provider};
use crate::support::block_on;

const REDIRECT: &str = "http://127.0.0.1:9/-/app-passwords/callback";

fn rp(provider: &Provider, allowed_groups: &[&str]) -> Oidc {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, provider::CLIENT_SECRET).unwrap();
    let raw = RawOidc {
        issuer: provider.issuer.clone(),
        client_id: provider::CLIENT_ID.into(),
        client_secret_file: Some(secret.display().to_string()),
        allowed_groups: Some(allowed_groups.iter().map(|g| (*g).to_owned()).collect()),
        ..RawOidc::default()
    };
    let config = raw
        .build(dir.path(), |s| humantime::parse_duration(s).ok())
        .unwrap();
    Oidc::new(&config).unwrap()
}

/// Starts a sign-in and logs `user` in at the provider: the pre-login record
/// and the provider's answer.
async fn login(p: &Provider, rp: &Oidc, agent: &mut Agent, user: &str) -> (Pending, Callback) {
    let (url, pending) = rp.begin(REDIRECT, None, "/-/app-passwords").await.unwrap();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("nonce="), "{url}");
    let cb = agent.sign_in(p, &url, user).await;
    assert!(cb.url.starts_with(REDIRECT), "{cb:?}");
    (pending, cb)
}

async fn finish(rp: &Oidc, pending: &Pending, cb: &Callback) -> Result<SignIn, SignInError> {
    let state = cb.param("state").unwrap_or_default();
    let code = cb.param("code").unwrap_or_default();
    rp.finish(pending, &state, &code).await
}

#[test]
fn oidc_signs_in_through_the_providers_forms() {
    let Some(p) = Provider::start("oidc_signs_in_through_the_providers_forms", &[REDIRECT]) else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &[]);
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        let who = finish(&rp, &pending, &cb).await.unwrap();
        assert_eq!(who.user, "alice");
        let now = passgate::oidc::unix_now();
        assert!(who.auth_time <= now && who.auth_time + 60 > now, "{who:?}");
    });
}

#[test]
fn oidc_wrong_state_signs_nobody_in() {
    let Some(p) = Provider::start("oidc_wrong_state_signs_nobody_in", &[REDIRECT]) else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &[]);
        let mut agent = Agent::default();
        let (pending, cb) = login(&p, &rp, &mut agent, "alice").await;
        // Another browser's pre-login record with this browser's answer.
        let (_, other) = rp.begin(REDIRECT, None, "/").await.unwrap();
        let code = cb.param("code").unwrap();
        let state = cb.param("state").unwrap();
        assert!(matches!(
            rp.finish(&other, &state, &code).await,
            Err(SignInError::BadState)
        ));
        assert!(matches!(
            rp.finish(&pending, "forged", &code).await,
            Err(SignInError::BadState)
        ));
        assert!(matches!(
            rp.finish(&pending, "", &code).await,
            Err(SignInError::BadState)
        ));
    });
}

#[test]
fn oidc_replayed_code_is_refused_by_the_provider() {
    let Some(p) = Provider::start("oidc_replayed_code_is_refused_by_the_provider", &[REDIRECT])
    else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &[]);
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        finish(&rp, &pending, &cb).await.unwrap();
        let again = finish(&rp, &pending, &cb).await;
        assert!(
            matches!(again, Err(SignInError::CodeRefused(_))),
            "{again:?}"
        );
        // A wrong PKCE verifier cannot redeem a fresh code either.
        let (mut pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        pending.pkce_verifier = "a".repeat(64);
        let r = finish(&rp, &pending, &cb).await;
        assert!(matches!(r, Err(SignInError::CodeRefused(_))), "{r:?}");
    });
}

#[test]
fn oidc_forged_id_tokens_are_refused() {
    let Some(p) = Provider::start("oidc_forged_id_tokens_are_refused", &[REDIRECT]) else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &[]);
        for mode in [
            "nonce",
            "aud",
            "iss",
            "expired",
            "iat-future",
            "azp",
            "azp-only",
            "none",
            "foreign-key",
            "foreign-key-same-kid",
            "hs256",
            "bad-signature",
            "swapped-claims",
        ] {
            let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
            p.tamper(mode).await;
            let r = finish(&rp, &pending, &cb).await;
            assert!(
                matches!(r, Err(SignInError::InvalidIdToken(_))),
                "{mode}: {r:?}"
            );
        }
        // The genuine token still works after all that.
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        assert_eq!(finish(&rp, &pending, &cb).await.unwrap().user, "alice");
    });
}

#[test]
fn oidc_rotated_key_is_fetched_once_then_rate_limited() {
    let Some(p) = Provider::start("oidc_rotated_key_is_fetched_once", &[REDIRECT]) else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &[]);
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        finish(&rp, &pending, &cb).await.unwrap();
        // The issuer rotates its key: the cached JWKS lacks the new kid, so
        // the relying party fetches the JWKS again and accepts the token.
        p.rotate().await;
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        assert_eq!(finish(&rp, &pending, &cb).await.unwrap().user, "alice");
        // A forged kid right after: no second fetch within the interval.
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        p.tamper("foreign-key").await;
        let r = finish(&rp, &pending, &cb).await;
        assert!(matches!(r, Err(SignInError::InvalidIdToken(_))), "{r:?}");
    });
}

#[test]
fn oidc_allowed_groups_and_user_names_are_enforced() {
    let Some(p) = Provider::start("oidc_allowed_groups_and_user_names", &[REDIRECT]) else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &["devs"]);
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "bob").await;
        let r = finish(&rp, &pending, &cb).await;
        assert!(
            matches!(r, Err(SignInError::NotInGroup(ref u)) if u == "bob"),
            "{r:?}"
        );
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "alice").await;
        assert_eq!(finish(&rp, &pending, &cb).await.unwrap().user, "alice");
        // A claim that is not a clean user name (a colon) signs nobody in.
        let (pending, cb) = login(&p, &rp, &mut Agent::default(), "mallory").await;
        let r = finish(&rp, &pending, &cb).await;
        assert!(matches!(r, Err(SignInError::BadUsername)), "{r:?}");
    });
}

#[test]
fn oidc_step_up_sends_max_age_and_gets_a_fresh_sign_in() {
    let Some(p) = Provider::start("oidc_step_up_sends_max_age", &[REDIRECT]) else {
        return;
    };
    block_on(async {
        let rp = rp(&p, &[]);
        let mut agent = Agent::default();
        let (pending, cb) = login(&p, &rp, &mut agent, "alice").await;
        let first = finish(&rp, &pending, &cb).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (url, pending) = rp
            .begin(REDIRECT, Some(Duration::from_secs(1)), "/")
            .await
            .unwrap();
        assert!(url.contains("max_age=1"), "{url}");
        // The provider's session is older than max_age: it asks for the
        // login form again (the agent fills it), and auth_time moves.
        let cb = agent.sign_in(&p, &url, "alice").await;
        let second = finish(&rp, &pending, &cb).await.unwrap();
        assert!(second.auth_time > first.auth_time, "{first:?} {second:?}");
    });
}

#[test]
fn oidc_unreachable_issuer_is_a_clear_error() {
    // No node needed: nothing listens on the issuer's port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let raw = RawOidc {
        issuer: format!("http://{addr}"),
        client_id: "passgate".into(),
        ..RawOidc::default()
    };
    let config = raw
        .build(std::path::Path::new("/"), |s| {
            humantime::parse_duration(s).ok()
        })
        .unwrap();
    let rp = Oidc::new(&config).unwrap();
    let r = block_on(rp.begin(REDIRECT, None, "/"));
    assert!(matches!(r, Err(SignInError::IssuerUnreachable(_))), "{r:?}");
}
