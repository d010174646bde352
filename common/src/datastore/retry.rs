//! The one rule for a compare-and-swap that lost to another writer.
//!
//! - A conflict is a transaction whose conditions did not hold: a key it was conditional on
//!   changed (or appeared, or went) since it was read. A failed request is not a conflict: it
//!   is an error of its own and is never retried here (the datastore client already fails
//!   over between endpoints).
//! - After a conflict the loop reads the keys again (usually from the values the failed
//!   transaction read back, so without another request), reapplies its change and tries again.
//! - Each loop has a budget of retries, chosen where it runs: an operation may conflict that many
//!   times; the conflict after that gives up with [`codes::CONFLICT`] and the message the loop
//!   gives.
//! - Backoff is chosen with the budget. [`Backoff::Immediate`] retries at once, for keys that
//!   only the writers of one workload share. [`Backoff::Jitter`], for keys that every request on
//!   a node (or in the cluster) contends for, pauses a random time after losing a race, growing
//!   with the number of conflicts up to [`MAX_JITTER`], so that contenders spread out.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::error::{Error, Result, codes};

/// Upper bound of the random pause after losing a race (with [`Backoff::Jitter`]).
pub const MAX_JITTER: Duration = Duration::from_millis(20);

/// What a loop does between a conflict and its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Try again at once.
    Immediate,
    /// After losing a race to another writer, pause a random time first.
    Jitter,
}

/// Counts the conflicts of one operation against its budget of retries.
///
/// An operation that runs several loops (one per block it tries, say) shares one count between
/// them: call [`CasRetry::restart`] at its start.
#[derive(Debug)]
pub struct CasRetry {
    retries: u32,
    backoff: Backoff,
    conflicts: Cell<u32>,
}

impl CasRetry {
    /// A count allowing `retries` conflicts, pausing between attempts as `backoff` says.
    pub fn new(retries: u32, backoff: Backoff) -> Self {
        CasRetry {
            retries,
            backoff,
            conflicts: Cell::new(0),
        }
    }

    /// The number of conflicts this count allows.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Forgets the conflicts counted so far, for the next operation.
    pub fn restart(&self) {
        self.conflicts.set(0);
    }

    /// Counts one conflict. `Ok` when the loop may try again (after the pause its backoff asks
    /// for when `raced`, i.e. another writer changed a key in between); when the budget is
    /// spent, the error that gives up, with the message `gave_up` returns.
    pub fn conflicted(&self, raced: bool, gave_up: impl FnOnce() -> String) -> Result<()> {
        let n = self.conflicts.get() + 1;
        self.conflicts.set(n);
        if n > self.retries {
            return Err(Error::new(codes::CONFLICT, gave_up()));
        }
        if raced && self.backoff == Backoff::Jitter {
            std::thread::sleep(jitter(n));
        }
        Ok(())
    }
}

/// A random pause that grows with the number of conflicts, up to [`MAX_JITTER`].
fn jitter(conflicts: u32) -> Duration {
    let ceiling_us = (250u64 << conflicts.min(8)).min(MAX_JITTER.as_micros() as u64);
    Duration::from_micros(RandomState::new().hash_one(conflicts) % ceiling_us.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts_until_giving_up(retry: &CasRetry) -> (u32, Error) {
        let mut attempts = 1;
        loop {
            match retry.conflicted(false, || "key kept changing".to_string()) {
                Ok(()) => attempts += 1,
                Err(err) => return (attempts, err),
            }
        }
    }

    #[test]
    fn gives_up_on_the_conflict_after_the_budget() {
        for retries in [0, 4, 9, 100] {
            let retry = CasRetry::new(retries, Backoff::Immediate);
            let (attempts, err) = attempts_until_giving_up(&retry);
            assert_eq!(attempts, retries + 1);
            assert_eq!(err.code(), codes::CONFLICT);
            assert_eq!(err.msg(), "key kept changing");
        }
    }

    #[test]
    fn restart_gives_the_next_operation_the_whole_budget() {
        let retry = CasRetry::new(3, Backoff::Immediate);
        attempts_until_giving_up(&retry);
        retry.restart();
        assert_eq!(attempts_until_giving_up(&retry).0, 4);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for conflicts in 1..=20 {
            assert!(
                jitter(conflicts) < MAX_JITTER,
                "after {conflicts} conflicts"
            );
        }
        assert!(jitter(1) < Duration::from_micros(500));
    }
}
