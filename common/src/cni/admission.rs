//! How many ADDs run at once on one node. A runtime that starts many containers together
//! (a node coming up, a deployment scaled out) starts their ADDs together, and on a machine
//! with few cores they then share the CPU: each gets a sliver of it, and all of them finish
//! near the end of the burst. Letting a few run at a time while the others wait their turn
//! takes no longer for the burst as a whole and finishes most ADDs much sooner: the first ones
//! are done after a few turns instead of after all of them.
//!
//! A slot is an `flock` on one of the files `add-slot:<n>.flock` in the lock directory, kept
//! like the node's IPAM lock file ([`KeptLock`]), held from after the attachment's lock to the
//! end of the ADD. Only `calico`'s ADDs take one ([`super::Plugin::takes_add_slots`]); DEL
//! spends most of its time asleep in the kernel's teardown, which a slot would only serialise.
//! So a slot's holder may wait for its own locks and for the `calico-ipam` it runs, but no
//! process it waits for ever waits for a slot: no cycle. (A `calico` run by another plugin of
//! ours would not take one either; its caller holds one.)
//!
//! The gate never fails an ADD. An ADD that finds the slots it tries held waits for one (the
//! slot its process id picks, as the kernel wakes a waiter when that slot's holder is done) for
//! up to `SLOT_WAIT` (1 s), then runs without one: a holder stuck on a slow etcd must not hold up
//! the node's other containers for longer than that. The thread that waited stays blocked
//! until the process ends; should it get the slot meanwhile, it lets it go at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::delegate::DELEGATION_DEPTH_ENV;
use super::lock::{self, KeptLock};
use crate::error::{Code, Error, Result};
use crate::log;

/// How many ADDs of the node run at once (`0`: no limit). Every plugin process on the node
/// should see the same value. Without it, twice the CPUs the plugin may run on.
pub const ADD_SLOTS_ENV: &str = "CALICO_CNI_ADD_SLOTS";

/// How many slots an ADD tries before it waits for one: on a machine with many CPUs, trying
/// every one of many held slots would cost more than the wait it saves.
const SLOTS_TRIED: usize = 8;

/// How long an ADD waits for a slot before it runs without one. In a burst slots turn over
/// every few milliseconds; a wait this long means their holders are stuck.
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// A held slot, or none (no limit, or none came free in time). Dropping it frees the slot.
pub struct AddSlot {
    held: Option<KeptLock>,
}

impl AddSlot {
    /// Takes one of the node's `slots` in `lock_dir`, waiting up to `SLOT_WAIT` (1 s) when all
    /// are held.
    pub fn take(lock_dir: &Path, slots: usize) -> AddSlot {
        AddSlot::take_within(lock_dir, slots, SLOT_WAIT)
    }

    fn take_within(lock_dir: &Path, slots: usize, wait: Duration) -> AddSlot {
        let mut held = None;
        if slots > 0 {
            // Where this process starts looking and, when all it tries are held, waits.
            let mine = std::process::id() as usize % slots;
            held = free_slot(lock_dir, slots, mine).or_else(|| {
                let waited = KeptLock::acquire_within(&slot_path(lock_dir, mine), wait);
                waited
                    .map_err(|err| log::info(&format!("running without an ADD slot: {err}")))
                    .ok()
            });
        }
        AddSlot { held }
    }

    /// Whether this one holds a slot.
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }
}

/// The first slot nobody holds from slot `first` on, taken; `None` when all those tried are
/// held (or cannot be opened, which the wait that follows reports).
fn free_slot(lock_dir: &Path, slots: usize, first: usize) -> Option<KeptLock> {
    (0..slots.min(SLOTS_TRIED)).find_map(|n| {
        let path = slot_path(lock_dir, (first + n) % slots);
        KeptLock::acquire_within(&path, Duration::ZERO).ok()
    })
}

fn slot_path(lock_dir: &Path, n: usize) -> PathBuf {
    lock_dir.join(lock::file_name("add-slot", &n.to_string(), "flock"))
}

/// Whether this run takes a slot: an ADD that no plugin of ours delegated to.
pub fn takes_a_slot(command: super::Command, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let delegated = env(DELEGATION_DEPTH_ENV).is_some_and(|depth| depth != "0");
    command == super::Command::Add && !delegated
}

/// The node's number of slots: [`ADD_SLOTS_ENV`], or twice the CPUs this process may run on
/// (a turn also waits for etcd, during which the next one can use the CPU).
pub fn add_slots(env: &dyn Fn(&str) -> Option<String>) -> Result<usize> {
    match env(ADD_SLOTS_ENV).filter(|v| !v.is_empty()) {
        Some(value) => value.trim().parse().map_err(|_| {
            Error::new(
                Code::InvalidEnvironment,
                format!("{ADD_SLOTS_ENV}={value:?} is not a number of ADDs (0 for no limit)"),
            )
        }),
        None => Ok(2 * usable_cpus()),
    }
}

/// The CPUs this process may run on (its affinity mask), at least one.
fn usable_cpus() -> usize {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return 1;
    };
    let count = (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .count();
    count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Command;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("calico-slots-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_add_takes_a_free_slot_and_runs_without_one_when_none_comes_free() {
        let dir = temp_dir("full");
        let first = AddSlot::take_within(&dir, 2, Duration::ZERO);
        let second = AddSlot::take_within(&dir, 2, Duration::ZERO);
        assert!(first.is_held() && second.is_held());
        let third = AddSlot::take_within(&dir, 2, Duration::ZERO);
        assert!(
            !third.is_held(),
            "a third ADD found a slot among two held ones"
        );
        drop(first);
        let fourth = AddSlot::take_within(&dir, 2, Duration::ZERO);
        assert!(
            fourth.is_held(),
            "the slot the first ADD freed was not taken"
        );
        assert!(!AddSlot::take_within(&dir, 0, Duration::ZERO).is_held());
        drop((second, fourth));
        let kept: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(
            kept.iter().all(|name| name.starts_with("add-slot:")),
            "{kept:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_waiting_add_gets_the_slot_its_holder_frees() {
        let dir = temp_dir("wait");
        let held = AddSlot::take_within(&dir, 1, Duration::ZERO);
        let waiter = std::thread::spawn({
            let dir = dir.clone();
            move || AddSlot::take_within(&dir, 1, Duration::from_secs(60)).is_held()
        });
        // Free the slot only once the waiter is blocked on it, so that it gets the slot by
        // waiting, not by finding it free.
        crate::cni::lock::wait_for_flock_waiter(&slot_path(&dir, 0));
        drop(held);
        assert!(waiter.join().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_adds_not_delegated_to_take_a_slot() {
        let none = |_: &str| None;
        let delegated = |name: &str| (name == DELEGATION_DEPTH_ENV).then(|| "1".to_string());
        assert!(takes_a_slot(Command::Add, &none));
        assert!(!takes_a_slot(Command::Add, &delegated));
        for command in [Command::Del, Command::Check, Command::Status, Command::Gc] {
            assert!(!takes_a_slot(command, &none));
        }
    }

    #[test]
    fn the_number_of_slots_comes_from_the_environment_or_the_cpus() {
        let set = |value: &'static str| {
            move |name: &str| (name == ADD_SLOTS_ENV).then(|| value.to_string())
        };
        assert_eq!(add_slots(&set("3")).unwrap(), 3);
        assert_eq!(add_slots(&set("0")).unwrap(), 0);
        assert_eq!(add_slots(&|_: &str| None).unwrap(), 2 * usable_cpus());
        let err = add_slots(&set("many")).unwrap_err();
        assert_eq!(err.code(), Code::InvalidEnvironment);
        assert!(err.to_string().contains(ADD_SLOTS_ENV), "{err}");
    }
}
