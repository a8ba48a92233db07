//! Private parsers opened to the cargo-fuzz targets in `fuzz/`, and nothing
//! else: compiled only under `--cfg fuzzing`, which `cargo fuzz` sets (the
//! linkerd2-proxy pattern). The targets check the invariants; this module
//! only forwards.

use crate::auth::basic::{BasicCredentials, BasicError};

/// `Host` validation, as `proxy` runs it on every HTTP/1.1 request.
pub fn valid_host(host: &[u8]) -> bool {
    crate::proxy::valid_host(host)
}

/// Strict Basic decoding of one `Authorization` header value, without the
/// `HeaderMap` around it (which would refuse some bytes before the decoder
/// sees them).
pub fn basic_decode_value(value: &[u8], creds: &mut BasicCredentials) -> Result<(), BasicError> {
    crate::auth::basic::decode_value(value, creds)
}
