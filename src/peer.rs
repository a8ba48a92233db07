//! A client address as every per-address limit counts it.
//!
//! IPv4 (IPv4-mapped IPv6, `::ffff:a.b.c.d`, RFC 4291 §2.5.5.2, included) by
//! the full address; other IPv6 by the /64 prefix, since one host usually
//! controls a whole /64 (RFC 4291 §2.5.4, RFC 8981). Used by the connection
//! caps (`conn`) and the brute-force limits (`auth::throttle`); pure, imports
//! nothing of the crate.

use std::net::IpAddr;

/// An address as the limits see it: IPv4 (IPv4-mapped IPv6 included) as is,
/// IPv6 by its /64, which one host typically owns whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    V4(u32),
    V6Net64(u64),
    /// Shared by every address that found the map full.
    Overflow,
}

impl From<IpAddr> for AddrKey {
    fn from(addr: IpAddr) -> AddrKey {
        match addr {
            IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(u32::from(v4)),
                None => AddrKey::V6Net64(u64::try_from(u128::from(v6) >> 64).unwrap_or(u64::MAX)),
            },
        }
    }
}
