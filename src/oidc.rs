//! passgate as an OpenID Connect relying party, for the self-service page's
//! `identity = "oidc"`.
//!
//! # What this module owns
//!
//! - **The protocol**, through the `openidconnect` crate over passgate's own
//!   HTTP client ([`http`]): discovery, the authorization request
//!   (authorization code flow, PKCE S256, `state`, `nonce`, `max_age` for a
//!   step-up) and the code exchange.
//! - **ID token verification**, all of it before a user name is believed: the
//!   signature with a key from the issuer's JWKS and an algorithm from
//!   [`ALLOWED_ALGS`] (never `none`, never an HMAC keyed by the client
//!   secret), `iss`, `aud` (extra audiences refused), `azp` when present,
//!   `exp`, `iat` (not in the future), the `nonce` of this browser's
//!   pre-login record and, after a `max_age` request, `auth_time`.
//! - **The key set cache**: discovery and the JWKS are fetched once and kept;
//!   a token signed with an unknown key id fetches the JWKS again, at most
//!   once per [`JWKS_REFETCH_EVERY`] (a stream of forged key ids cannot make
//!   passgate hammer the issuer).
//! - **Who the token names**: the `username_claim` claim, validated like every
//!   user name, and `allowed_groups` against the `groups` claim.
//!
//! # What it never does
//!
//! It keeps no state about browsers: the pre-login record ([`Pending`]) and
//! the session live in the store (`oidc/session.rs`), and the page decides
//! what to answer. It never follows a redirect from the issuer and never talks
//! plain HTTP to anything but a loopback issuer.

pub mod config;
pub mod http;
pub mod session;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse as _,
};
use serde::{Deserialize, Serialize};

pub use self::config::{OidcConfig, RawOidc};
use self::http::HttpClient;

/// Signature algorithms an ID token may use: asymmetric only.
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];
/// An unknown key id fetches the JWKS again at most this often.
pub const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// The discovery document (and its JWKS) is fetched again after this long.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Clock skew tolerated between passgate and the issuer (`iat`, `auth_time`).
pub const SKEW: Duration = Duration::from_secs(60);

/// Why a sign-in failed. None of them signs anyone in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// Discovery or the JWKS could not be fetched or parsed.
    #[error("the sign-in provider is unreachable or its discovery document is invalid: {0}")]
    IssuerUnreachable(String),
    /// The callback has no pre-login record for this browser (expired, used,
    /// or never started here).
    #[error("no sign-in in progress in this browser (it expired or was already used)")]
    NoPending,
    /// The callback's `state` is not the pre-login record's.
    #[error("the sign-in answer does not belong to this browser (state mismatch)")]
    BadState,
    /// The issuer answered with an error (the user cancelled, consent refused).
    #[error("the sign-in provider refused: {0}")]
    Provider(String),
    /// The callback carries no code.
    #[error("the sign-in answer carries no authorization code")]
    NoCode,
    /// The token endpoint refused the code (expired, replayed, PKCE mismatch).
    #[error("the sign-in provider refused the authorization code: {0}")]
    CodeRefused(String),
    /// The token endpoint could not be reached or answered nonsense.
    #[error("the sign-in provider's token endpoint failed: {0}")]
    TokenEndpoint(String),
    /// The token response has no ID token.
    #[error("the sign-in provider sent no ID token")]
    NoIdToken,
    /// The ID token failed verification (signature, iss, aud, azp, exp, iat, nonce).
    #[error("the ID token is invalid: {0}")]
    InvalidIdToken(String),
    /// A step-up asked for a fresh sign-in and the token's `auth_time` is older.
    #[error("the sign-in provider did not renew the sign-in")]
    NotFresh,
    /// The `username_claim` claim is missing or not a string.
    #[error("the ID token has no \"{0}\" claim")]
    NoUsername(String),
    /// The claim is not a clean user name.
    #[error("the ID token's user name is not a valid user name")]
    BadUsername,
    /// The user is in none of `allowed_groups`.
    #[error("{0} is not in a group allowed to use this page")]
    NotInGroup(String),
}

/// A browser's sign-in in progress, kept server-side (in the store) under
/// the random id of its pre-login cookie until the callback or the end of
/// `sign_in_timeout`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// The `redirect_uri` sent, sent again with the code.
    pub redirect_uri: String,
    /// `max_age` sent (a step-up), seconds.
    pub max_age: Option<u64>,
    /// Where to send the browser once signed in (a path under the mount).
    pub return_to: String,
    /// Unix seconds.
    pub started: u64,
    /// The user whose session this sign-in renews (a step-up): only a
    /// sign-in of that same user gets [`Pending::resume`] back.
    #[serde(default)]
    pub renews: Option<String>,
    /// What the page was doing when it asked for the step-up, to offer again
    /// once signed in (never carried out by the callback itself).
    #[serde(default)]
    pub resume: Option<Resume>,
}

/// A page action interrupted by a step-up: its name (`create`, `rotate`)
/// and the form fields the user filled in, without the CSRF token. Kept
/// server-side in the pre-login record, never in a URL or a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("redirect_uri", &self.redirect_uri)
            .field("max_age", &self.max_age)
            .field("return_to", &self.return_to)
            .field("started", &self.started)
            .field("renews", &self.renews)
            .field("resume", &self.resume.as_ref().map(|r| &r.action))
            .finish_non_exhaustive()
    }
}

/// Who the issuer signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    pub user: String,
    /// When the user last authenticated at the issuer (unix seconds): the
    /// `auth_time` claim, else the token's `iat`.
    pub auth_time: u64,
}

/// The relying party for one issuer. Shared by every request.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    http: HttpClient,
    issuer: IssuerUrl,
    /// Discovery and key set, fetched on first use; the mutex also makes
    /// concurrent first requests fetch once.
    provider: tokio::sync::Mutex<Option<Discovered>>,
}

#[derive(Debug, Clone)]
struct Discovered {
    metadata: CoreProviderMetadata,
    at: Instant,
    /// The last fetch of the JWKS for an unknown key id, for the rate limit.
    refetched: Option<Instant>,
}

impl Oidc {
    pub fn new(config: &OidcConfig) -> Result<Oidc, SignInError> {
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| SignInError::IssuerUnreachable(e.to_string()))?;
        let http = HttpClient::new(config.ca_file.as_deref())
            .map_err(|e| SignInError::IssuerUnreachable(e.to_string()))?;
        Ok(Oidc {
            config: config.clone(),
            http,
            issuer,
            provider: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Starts a sign-in: the URL to send the browser to, and the record to
    /// keep for its return. `max_age`: ask the issuer for a sign-in at most
    /// this old (a step-up).
    pub async fn begin(
        &self,
        redirect_uri: &str,
        max_age: Option<Duration>,
        return_to: &str,
    ) -> Result<(String, Pending), SignInError> {
        let metadata = self.metadata().await?;
        let client = self.client(metadata, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if !self.config.allowed_groups.is_empty() {
            req = req.add_scope(Scope::new("groups".into()));
        }
        if let Some(age) = max_age {
            req = req.set_max_age(age);
        }
        let (url, state, nonce) = req.url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            max_age: max_age.map(|d| d.as_secs()),
            return_to: return_to.to_owned(),
            started: unix_now(),
            renews: None,
            resume: None,
        };
        Ok((url.to_string(), pending))
    }

    /// Finishes a sign-in on the callback: `state` and `code` from its query,
    /// `pending` the browser's pre-login record (already removed from the
    /// store, so it is used once).
    pub async fn finish(
        &self,
        pending: &Pending,
        state: &str,
        code: &str,
    ) -> Result<SignIn, SignInError> {
        use subtle::ConstantTimeEq as _;
        if unix_now().saturating_sub(pending.started) > self.config.sign_in_timeout.as_secs() {
            return Err(SignInError::NoPending);
        }
        if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
            return Err(SignInError::BadState);
        }
        if code.is_empty() {
            return Err(SignInError::NoCode);
        }
        let metadata = self.metadata().await?;
        let client = self.client(metadata, &pending.redirect_uri)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInError::TokenEndpoint(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let _ = token.access_token();
        let id_token = token.id_token().ok_or(SignInError::NoIdToken)?;
        self.verify(id_token, pending).await
    }

    /// Verifies an ID token for `pending` and reads who it names.
    async fn verify(
        &self,
        id_token: &CoreIdToken,
        pending: &Pending,
    ) -> Result<SignIn, SignInError> {
        let nonce = Nonce::new(pending.nonce.clone());
        let mut refetched = false;
        let claims = loop {
            let jwks = self.metadata().await?.jwks().clone();
            let verifier = self.verifier(jwks);
            match id_token.claims(&verifier, &nonce) {
                Ok(claims) => break claims.clone(),
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refetched => {
                    refetched = true;
                    if !self.refetch_jwks().await? {
                        return Err(SignInError::InvalidIdToken(
                            "signed with a key not in the issuer's key set".into(),
                        ));
                    }
                }
                Err(e) => return Err(SignInError::InvalidIdToken(error_chain(&e))),
            }
        };
        if let Some(azp) = claims.authorized_party() {
            if azp.as_str() != self.config.client_id {
                return Err(SignInError::InvalidIdToken(format!(
                    "azp is {:?}, not this client",
                    azp.as_str()
                )));
            }
        }
        let now = unix_now();
        let iat = u64::try_from(claims.issue_time().timestamp()).unwrap_or(0);
        let auth_time = claims
            .auth_time()
            .map(|t| u64::try_from(t.timestamp()).unwrap_or(0));
        if let Some(max_age) = pending.max_age {
            let fresh = auth_time
                .is_some_and(|t| t + max_age + SKEW.as_secs() >= now && t <= now + SKEW.as_secs());
            if !fresh {
                return Err(SignInError::NotFresh);
            }
        }
        // The signature is verified: the payload's other claims can be read.
        let payload = payload_json(&id_token.to_string())
            .ok_or_else(|| SignInError::InvalidIdToken("payload is not JSON".into()))?;
        let claim = &self.config.username_claim;
        let user = match payload.get(claim) {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err(SignInError::NoUsername(claim.clone())),
        };
        if !crate::user::is_valid(&user) || user.trim() != user {
            return Err(SignInError::BadUsername);
        }
        if !self.config.allowed_groups.is_empty() {
            let groups = match payload.get("groups") {
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|g| g.as_str()).collect(),
                Some(serde_json::Value::String(s)) => vec![s.as_str()],
                _ => Vec::new(),
            };
            if !groups
                .iter()
                .any(|g| self.config.allowed_groups.iter().any(|a| a == g))
            {
                return Err(SignInError::NotInGroup(user));
            }
        }
        Ok(SignIn {
            user,
            auth_time: auth_time.unwrap_or(iat),
        })
    }

    fn verifier(&self, jwks: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
        CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            self.issuer.clone(),
            jwks,
        )
        .set_allowed_algs(ALLOWED_ALGS)
        // Extra audiences are refused (the default verifier trusts none).
        .set_issue_time_verifier_fn(|iat| {
            let latest = SystemTime::now() + SKEW;
            let iat = UNIX_EPOCH + Duration::from_secs(u64::try_from(iat.timestamp()).unwrap_or(0));
            if iat > latest {
                Err("issued in the future".to_owned())
            } else {
                Ok(())
            }
        })
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SignInError,
    > {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| SignInError::TokenEndpoint(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// The discovery document with its key set, fetched when missing or old.
    async fn metadata(&self) -> Result<CoreProviderMetadata, SignInError> {
        let mut provider = self.provider.lock().await;
        if let Some(d) = provider.as_ref().filter(|d| d.at.elapsed() < DISCOVERY_TTL) {
            return Ok(d.metadata.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| SignInError::IssuerUnreachable(error_chain(&e)))?;
        for endpoint in [
            Some(metadata.authorization_endpoint().as_str()),
            metadata.token_endpoint().map(|u| u.as_str()),
            Some(metadata.jwks_uri().as_str()),
        ]
        .into_iter()
        .flatten()
        {
            let allowed = endpoint
                .parse::<::http::Uri>()
                .is_ok_and(|u| http::allowed_url(&u));
            if !allowed {
                return Err(SignInError::IssuerUnreachable(format!(
                    "discovery names an endpoint that is not https: {endpoint}"
                )));
            }
        }
        *provider = Some(Discovered {
            metadata: metadata.clone(),
            at: Instant::now(),
            refetched: None,
        });
        Ok(metadata)
    }

    /// Fetches the JWKS again (a token names an unknown key id); false when
    /// the last fetch is younger than [`JWKS_REFETCH_EVERY`].
    async fn refetch_jwks(&self) -> Result<bool, SignInError> {
        let mut provider = self.provider.lock().await;
        let Some(d) = provider.as_mut() else {
            return Ok(false);
        };
        if d.refetched
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_EVERY)
        {
            return Ok(false);
        }
        d.refetched = Some(Instant::now());
        let jwks = CoreJsonWebKeySet::fetch_async(d.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| SignInError::IssuerUnreachable(error_chain(&e)))?;
        d.metadata = d.metadata.clone().set_jwks(jwks);
        Ok(true)
    }
}

/// The token endpoint's refusal of a code (`invalid_grant`: expired,
/// replayed, PKCE mismatch) is the browser's problem; anything else is the
/// issuer's.
fn token_error<RE, T>(e: RequestTokenError<RE, T>) -> SignInError
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => SignInError::CodeRefused(r.to_string()),
        other => SignInError::TokenEndpoint(error_chain(&other)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// The decoded payload of a compact JWS (its signature checked elsewhere).
fn payload_json(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
