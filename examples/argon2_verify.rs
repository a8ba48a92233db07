//! How long one argon2id verification takes with passgate's defaults
//! (m=19456 KiB, t=2, p=1) on this machine: `cargo run --release --example
//! argon2_verify [N]` prints min / median / max of N verifications (default 200).

use std::time::Instant;

use passgate::auth::verify::{hash_secret, verify_secret};
use passgate::config::Argon2Params;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let params = Argon2Params {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
    let Ok(phc) = hash_secret("0123456789abcdefghijABCDEFGHIJ01", &params) else {
        eprintln!("hashing failed");
        std::process::exit(1);
    };
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let ok = verify_secret("0123456789abcdefghijABCDEFGHIJ01", &phc);
        times.push(start.elapsed());
        assert!(matches!(ok, Ok(true)));
    }
    times.sort();
    println!(
        "argon2id verify (m=19456 KiB, t=2, p=1), {n} runs: min {:.2} ms, median {:.2} ms, max {:.2} ms",
        times[0].as_secs_f64() * 1e3,
        times[n / 2].as_secs_f64() * 1e3,
        times[n - 1].as_secs_f64() * 1e3
    );
}
