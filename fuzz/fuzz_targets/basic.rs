//! Fuzz target for `Authorization: Basic` decoding (`auth::basic`).
//!
//! Invariants, for any header value bytes:
//! - neither the strict decoder nor the lenient credential scan panics;
//! - accepted credentials have a user name of 1–255 characters with no
//!   colon and no control character, and the value is at most
//!   `MAX_HEADER_LEN` bytes;
//! - decoding is exact: the canonical encoding of `user:password`, decoded
//!   again, gives back the same user and password;
//! - whatever the strict decoder accepts, the lenient scan that guards `web`
//!   routes also sees: it reports both the user and the password.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use passgate::auth::basic::{any_presented_credential, BasicCredentials, MAX_HEADER_LEN};
use passgate::fuzz_logic::basic_decode_value;

fuzz_target!(|data: &[u8]| {
    let mut creds = BasicCredentials::new();
    let accepted = basic_decode_value(data, &mut creds).is_ok();

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert(AUTHORIZATION, value);
        let mut seen = 0;
        any_presented_credential(&headers, |_| {
            seen += 1;
            false
        });
        if accepted {
            let (user, password) = (creds.user(), creds.password());
            assert!(any_presented_credential(&headers, |c| c == user), "user unseen");
            assert!(any_presented_credential(&headers, |c| c == password), "password unseen");
        }
    }
    if !accepted {
        return;
    }

    let (user, password) = (creds.user(), creds.password());
    assert!(data.len() <= MAX_HEADER_LEN);
    let chars = user.chars().count();
    assert!((1..=255).contains(&chars), "user of {chars} characters");
    assert!(!user.contains(':') && !user.chars().any(char::is_control), "{user:?}");

    let canonical = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
    let mut again = BasicCredentials::new();
    if canonical.len() <= MAX_HEADER_LEN {
        basic_decode_value(canonical.as_bytes(), &mut again).expect("canonical form refused");
        assert_eq!((again.user(), again.password()), (user, password));
    }
});
