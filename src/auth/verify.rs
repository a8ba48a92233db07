//! argon2id hashing and verification, off the async workers and bounded.
//!
//! A verification costs tens of milliseconds of CPU and ~19 MiB of memory by
//! design, so it never runs on a reactor thread: [`Verifier`] admits at most
//! `threads + queue` verifications at once (the rest get 503 + `Retry-After`
//! at once instead of queueing without limit) and runs at most `threads` of
//! them in parallel on the blocking pool.
//!
//! Parameters live in each PHC string, so new `[auth.argon2]` settings apply to
//! new passwords while old hashes still verify with theirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Params;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("argon2 hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("stored hash is not a valid PHC string: {0}")]
    BadHash(argon2::password_hash::Error),
}

/// Why a verification did not produce a yes or no.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("all verification workers are busy")]
    Overloaded,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("verification task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Hashes `secret` with argon2id and a fresh random salt into a PHC string.
pub fn hash_secret(secret: &str, params: &Argon2Params) -> Result<String, HashError> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(HashError::Params)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Hash)
}

/// True when `secret` matches the PHC string; the parameters come from the string.
pub fn verify_secret(secret: &str, phc: &str) -> Result<bool, HashError> {
    let hash = PasswordHash::new(phc).map_err(HashError::BadHash)?;
    match Argon2::default().verify_password(secret.as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashError::BadHash(e)),
    }
}

/// The bounded verification pool.
#[derive(Debug)]
pub struct Verifier {
    /// Admission: running + waiting verifications.
    admit: Arc<Semaphore>,
    /// Running verifications, at most one per configured thread.
    run: Arc<Semaphore>,
    /// Dummy verifications (unknown ids) may hold at most half of the
    /// admission slots, so a flood of made-up ids with valid checksums (cheap
    /// to compute) cannot crowd out real users' first verifications.
    admit_dummy: Arc<Semaphore>,
    /// Verified against when there is no real hash (unknown id), so that an
    /// unknown id costs the same time as a wrong secret.
    dummy: Arc<str>,
    /// argon2id runs started, dummy ones included.
    runs: Arc<AtomicU64>,
    /// The sizes of `run` and `admit`, for [`Self::load`].
    threads: usize,
    capacity: usize,
    /// Tests hold this lock to keep a started run from finishing.
    #[cfg(test)]
    pub(crate) hold: Arc<std::sync::Mutex<()>>,
}

impl Verifier {
    pub fn new(threads: usize, queue: usize, params: &Argon2Params) -> Result<Verifier, HashError> {
        let threads = threads.max(1);
        let dummy = hash_secret("passgate-timing-equaliser", params)?;
        Ok(Verifier {
            admit_dummy: Arc::new(Semaphore::new(((threads + queue) / 2).max(1))),
            admit: Arc::new(Semaphore::new(threads + queue)),
            run: Arc::new(Semaphore::new(threads)),
            dummy: dummy.into(),
            runs: Arc::new(AtomicU64::new(0)),
            threads,
            capacity: threads + queue,
            #[cfg(test)]
            hold: Arc::default(),
        })
    }

    /// Verifications now `(running, waiting for a thread, capacity)`:
    /// beyond `capacity` admitted at once, requests get 503.
    pub fn load(&self) -> (usize, usize, usize) {
        let admitted = self.capacity.saturating_sub(self.admit.available_permits());
        let running = self.threads.saturating_sub(self.run.available_permits());
        (running, admitted.saturating_sub(running), self.capacity)
    }

    /// How many argon2id runs have started.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Verifies `secret` against `phc`, or against the dummy hash when `phc` is
    /// `None` (then the answer is always `false`, after the same work).
    pub async fn verify(&self, secret: &str, phc: Option<&str>) -> Result<bool, VerifyError> {
        self.verify_and(secret, phc, |_| ()).await
    }

    /// [`Self::verify`], then `settle(matched)` on the verification thread
    /// once the argon2id run has ended, whether or not the caller is still
    /// waiting. A caller gone before the run began drops `settle` unrun.
    pub async fn verify_and(
        &self,
        secret: &str,
        phc: Option<&str>,
        settle: impl FnOnce(bool) + Send + 'static,
    ) -> Result<bool, VerifyError> {
        let _dummy_slot = match phc {
            Some(_) => None,
            None => match self.admit_dummy.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Err(VerifyError::Overloaded),
            },
        };
        let Ok(_admitted) = self.admit.clone().try_acquire_owned() else {
            return Err(VerifyError::Overloaded);
        };
        let Ok(running) = self.run.clone().acquire_owned().await else {
            return Err(VerifyError::Overloaded);
        };
        let real = phc.is_some();
        let phc: Arc<str> = phc.map_or_else(|| self.dummy.clone(), Arc::from);
        let secret = secret.to_owned();
        let runs = self.runs.clone();
        #[cfg(test)]
        let hold = self.hold.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _running = running;
            runs.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "passgate::auth::verify", "argon2 run");
            #[cfg(test)]
            drop(hold.lock());
            let ok = verify_secret(&secret, &phc);
            settle(matches!(ok, Ok(true)) && real);
            ok
        })
        .await??;
        Ok(ok && real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Argon2Params {
        Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn hash_then_verify() {
        let phc = hash_secret("s3cret", &fast()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(verify_secret("s3cret", &phc).unwrap());
        assert!(!verify_secret("s3cret!", &phc).unwrap());
    }

    #[test]
    fn old_parameters_still_verify() {
        let old = hash_secret("x", &fast()).unwrap();
        let new = hash_secret(
            "x",
            &Argon2Params {
                memory_kib: 128,
                iterations: 2,
                parallelism: 1,
            },
        )
        .unwrap();
        assert!(verify_secret("x", &old).unwrap() && verify_secret("x", &new).unwrap());
    }

    #[test]
    fn garbage_hash_is_an_error_not_a_mismatch() {
        assert!(matches!(
            verify_secret("x", "not-a-phc"),
            Err(HashError::BadHash(_))
        ));
    }

    #[tokio::test]
    async fn dummy_never_verifies() {
        let v = Verifier::new(1, 1, &fast()).unwrap();
        assert!(!v.verify("passgate-timing-equaliser", None).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_ids_cannot_take_every_admission_slot() {
        let slow = Argon2Params {
            memory_kib: 8192,
            iterations: 8,
            parallelism: 1,
        };
        let v = Arc::new(Verifier::new(1, 3, &slow).unwrap());
        let phc = hash_secret("x", &fast()).unwrap();
        // Two dummy verifications take the dummy share (4 / 2) and hold it.
        let held: Vec<_> = (0..2)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move { v.verify("y", None).await })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            v.verify("z", None).await,
            Err(VerifyError::Overloaded)
        ));
        // A real verification still gets in.
        assert!(v.verify("x", Some(&phc)).await.unwrap());
        for h in held {
            h.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn saturated_pool_answers_overloaded() {
        let v = Arc::new(
            Verifier::new(
                1,
                0,
                &Argon2Params {
                    memory_kib: 8192,
                    iterations: 8,
                    parallelism: 1,
                },
            )
            .unwrap(),
        );
        let phc = hash_secret("x", &fast()).unwrap();
        let slow = {
            let v = v.clone();
            tokio::spawn(async move { v.verify("y", None).await })
        };
        tokio::task::yield_now().await;
        // The single admission slot is held by the slow verification.
        let mut saw_overload = false;
        for _ in 0..50 {
            if matches!(
                v.verify("x", Some(&phc)).await,
                Err(VerifyError::Overloaded)
            ) {
                saw_overload = true;
                break;
            }
        }
        assert!(saw_overload);
        slow.await.unwrap().unwrap();
    }
}
