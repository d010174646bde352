//! Undoing a failed ADD. Every step that creates state returns a [`Guard`] over what it
//! created; dropping the guard before [`Guard::commit`] undoes the step. What an undo could not
//! remove is noted in the operation's [`RollbackLog`] and reported on stderr, so that the guard
//! of the attachment record, dropped last, keeps the record for a later DEL or GC.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Result;
use crate::log;

/// Shared by the guards of one operation, also across the threads that run its steps side by
/// side: whether any undo failed.
#[derive(Debug, Clone, Default)]
pub struct RollbackLog(Arc<AtomicBool>);

impl RollbackLog {
    /// Notes that an undo failed.
    pub fn record_failure(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether any undo failed.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one step created, and how to remove it again.
pub trait Undo {
    /// The undo as an action on a named object, for messages: `delete host veth cali0123`.
    fn action(&self) -> String;

    /// Removes what the step created, as far as it is still this run's. Returns the objects it
    /// left because another writer has taken them over since. `log` says whether an undo
    /// dropped before this one failed.
    fn undo(&mut self, log: &RollbackLog) -> Result<Vec<String>>;
}

/// What one step created; dropping it undoes the step unless committed. A failed undo is
/// recorded in the log and reported on stderr; `Drop` never panics.
#[derive(Debug)]
pub struct Guard<T: Undo> {
    step: T,
    log: RollbackLog,
    committed: bool,
}

impl<T: Undo> Guard<T> {
    /// Guards `step`, reporting a failed undo to `log`.
    pub fn new(step: T, log: &RollbackLog) -> Guard<T> {
        Guard {
            step,
            log: log.clone(),
            committed: false,
        }
    }

    /// Keeps what the step created.
    pub fn commit(&mut self) {
        self.committed = true;
    }
}

impl<T: Undo> Deref for Guard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.step
    }
}

impl<T: Undo> DerefMut for Guard<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.step
    }
}

impl<T: Undo> Drop for Guard<T> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        match self.step.undo(&self.log) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => log::info(&format!(
                "rollback: leaving {}: changed by another writer",
                left.join(", ")
            )),
            Err(err) => {
                self.log.record_failure();
                log::error(&format!(
                    "rollback: failed to {}: {err}",
                    self.step.action()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    struct Step {
        fails: bool,
        undone: Rc<Cell<usize>>,
    }

    impl Undo for Step {
        fn action(&self) -> String {
            "undo a test step".into()
        }

        fn undo(&mut self, _log: &RollbackLog) -> Result<Vec<String>> {
            self.undone.set(self.undone.get() + 1);
            match self.fails {
                true => Err(crate::Error::internal("refused")),
                false => Ok(Vec::new()),
            }
        }
    }

    #[test]
    fn dropping_undoes_unless_committed_and_a_failure_reaches_the_log() {
        for (fails, commit, undone, failed) in [
            (false, false, 1, false),
            (true, false, 1, true),
            (true, true, 0, false),
        ] {
            let log = RollbackLog::default();
            let count = Rc::new(Cell::new(0));
            let mut guard = Guard::new(
                Step {
                    fails,
                    undone: count.clone(),
                },
                &log,
            );
            if commit {
                guard.commit();
            }
            drop(guard);
            assert_eq!((count.get(), log.failed()), (undone, failed));
        }
    }
}
