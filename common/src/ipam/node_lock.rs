//! One IPAM read-modify-write at a time per node, and a copy of the node's blocks beside the
//! lock.
//!
//! Without the lock, concurrent ADDs on one node all read the node's block, assign its first
//! free address and race to write it back: all but one lose the compare-and-swap, and a failed
//! conditional write still costs etcd a consensus round and an fsync. Holding an `flock` on
//! `ipam:<node>.flock` in the attachment locks' directory from reading the block to committing
//! it makes them take turns instead; another node's writer can still race, which the
//! compare-and-swap still catches. The file stays when its holder is done ([`KeptLock`]), so
//! the lock passes from one turn to the next without a new file.
//!
//! The copy (`<node>.blocks` beside the node's block hint files, JSON) holds the blocks and
//! affinity keys as the last holder of the lock left them, with their revisions. It lives with
//! the hints rather than in the lock directory, which by design holds files only while a verb
//! runs (the node's lock file aside). It is written only under the lock, after a successful
//! commit, so the next holder can use it in place of a read made before it waited for the lock
//! (which would be stale by then). It serves the first attempt only: when another node changed a block meanwhile, the
//! commit fails and the allocator reads etcd again. A copy that is missing, unreadable or
//! corrupt is ignored; without a hint directory there is no copy, only the lock.
//!
//! The copy is rewritten in place, followed by a line with the SHA-1 of what precedes it: a
//! writer killed midway leaves a file whose digest does not match, which is ignored. Truncating
//! and writing it anew would be as safe, but ext4 flushes a file truncated to nothing when it
//! is closed, which cost every ADD about 0.4 ms while it held the lock.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::cni::lock::{self, KeptLock};
use crate::datastore::Entry;
use crate::log;

/// The held IPAM lock of one node. Dropping it releases the lock.
pub struct NodeIpamLock {
    _lock: KeptLock,
    copy_path: Option<PathBuf>,
}

/// One entry of the copy.
#[derive(Debug, Serialize, Deserialize)]
struct CopiedEntry {
    key: String,
    value: String,
    mod_revision: i64,
    create_revision: i64,
}

impl NodeIpamLock {
    /// Takes the IPAM lock of `node` in `lock_dir`, waiting for its holder; the block copy is
    /// kept at `copy_path`, if given.
    pub fn acquire(
        lock_dir: &Path,
        node: &str,
        copy_path: Option<PathBuf>,
    ) -> Result<NodeIpamLock> {
        let lock = KeptLock::acquire(&lock_dir.join(lock_file_name(node)))?;
        Ok(NodeIpamLock {
            _lock: lock,
            copy_path,
        })
    }

    /// The copy as the last holder left it, by key; empty when missing or unusable.
    pub fn read_copy(&self) -> HashMap<String, Entry> {
        let Some(path) = &self.copy_path else {
            return HashMap::new();
        };
        let Ok(bytes) = std::fs::read(path) else {
            return HashMap::new();
        };
        let Some(json) = verified(&bytes) else {
            log::debug(&format!(
                "ignoring block copy {}: its digest does not match (a write was cut short)",
                path.display()
            ));
            return HashMap::new();
        };
        match serde_json::from_slice::<Vec<CopiedEntry>>(json) {
            Ok(entries) => entries
                .into_iter()
                .map(|e| {
                    let entry = Entry {
                        key: e.key.clone(),
                        value: e.value.into_bytes(),
                        mod_revision: e.mod_revision,
                        create_revision: e.create_revision,
                    };
                    (e.key, entry)
                })
                .collect(),
            Err(err) => {
                log::debug(&format!("ignoring block copy {}: {err}", path.display()));
                HashMap::new()
            }
        }
    }

    /// Replaces the copy with `copy` updated by what this run saw and wrote (`seen`; `None`
    /// for a key found absent or deleted). Call only after a successful commit. A failure is
    /// logged: the next holder then reads etcd.
    pub fn write_copy(&self, copy: HashMap<String, Entry>, seen: &BTreeMap<String, Option<Entry>>) {
        let Some(path) = &self.copy_path else {
            return;
        };
        let mut merged: BTreeMap<String, Entry> = copy.into_iter().collect();
        for (key, entry) in seen {
            match entry {
                Some(entry)
                    if merged
                        .get(key)
                        .is_none_or(|old| old.mod_revision <= entry.mod_revision) =>
                {
                    merged.insert(key.clone(), entry.clone());
                }
                Some(_) => {}
                None => {
                    merged.remove(key);
                }
            }
        }
        let entries: Vec<CopiedEntry> = merged
            .into_values()
            .filter_map(|e| {
                Some(CopiedEntry {
                    value: String::from_utf8(e.value).ok()?,
                    key: e.key,
                    mod_revision: e.mod_revision,
                    create_revision: e.create_revision,
                })
            })
            .collect();
        let written = serde_json::to_vec(&entries)
            .map_err(crate::Error::from)
            .and_then(|json| Ok(rewrite_in_place(path, &with_digest(json))?));
        if let Err(err) = written {
            log::debug(&format!(
                "cannot write block copy {}: {err}",
                path.display()
            ));
        }
    }
}

/// `ipam:<node>.flock` in the lock directory, the one file there that stays after its holder
/// is done (see [`KeptLock`]); the attachments' lock files end in `.lock`. A node name too long
/// for a file name is hashed.
fn lock_file_name(node: &str) -> String {
    lock::file_name("ipam", node, "flock")
}

/// Rewrites the copy in place: over the old bytes, then cut to the new length. Every reader
/// of the copy holds the node's lock, so none sees it half written, except after a writer was
/// killed mid-write; the digest tells ([`verified`]). That spares every ADD a temporary file
/// and a rename while it holds the lock.
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    let file = match open() {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            open()?
        }
        opened => opened?,
    };
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

/// `json` followed by a line with its SHA-1.
fn with_digest(mut json: Vec<u8>) -> Vec<u8> {
    let digest = sha1_smol::Sha1::from(&json).digest().to_string();
    json.push(b'\n');
    json.extend_from_slice(digest.as_bytes());
    json
}

/// The JSON of a copy written by [`with_digest`], when its last line is the SHA-1 of the rest.
fn verified(bytes: &[u8]) -> Option<&[u8]> {
    let split = bytes.iter().rposition(|&b| b == b'\n')?;
    let (json, digest) = (&bytes[..split], &bytes[split + 1..]);
    (sha1_smol::Sha1::from(json).digest().to_string().as_bytes() == digest).then_some(json)
}

/// `known` (entries read before the lock was taken; `None` for keys found absent) with the
/// copy's entries where the copy is newer or the key was not read.
pub fn newest_of(
    known: &HashMap<String, Option<Entry>>,
    copy: &HashMap<String, Entry>,
) -> HashMap<String, Option<Entry>> {
    let mut merged = known.clone();
    for (key, copied) in copy {
        let newer = match known.get(key) {
            Some(Some(read)) => read.mod_revision < copied.mod_revision,
            // Absent when read, yet copied: whichever is wrong fails the compare-and-swap.
            Some(None) | None => true,
        };
        if newer {
            merged.insert(key.clone(), Some(copied.clone()));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, mod_revision: i64) -> Entry {
        Entry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision,
            create_revision: 1,
        }
    }

    #[test]
    fn the_copy_keeps_the_newest_entry_and_forgets_deleted_ones() {
        let dir = std::env::temp_dir().join(format!("calico-node-lock-{}", std::process::id()));
        let copy_path = dir.join("node1.blocks");
        let lock = NodeIpamLock::acquire(&dir, "node1", Some(copy_path.clone())).unwrap();
        assert!(lock.read_copy().is_empty());
        let seen = BTreeMap::from([
            ("/b1".to_string(), Some(entry("/b1", "one", 5))),
            ("/b2".to_string(), Some(entry("/b2", "two", 6))),
        ]);
        lock.write_copy(HashMap::new(), &seen);
        let copy = lock.read_copy();
        assert_eq!(copy["/b1"].value, b"one");
        let later = BTreeMap::from([
            ("/b1".to_string(), Some(entry("/b1", "older", 4))),
            ("/b2".to_string(), None),
        ]);
        lock.write_copy(copy, &later);
        let copy = lock.read_copy();
        assert_eq!(copy["/b1"].value, b"one");
        assert!(!copy.contains_key("/b2"));

        let known = HashMap::from([
            ("/b1".to_string(), Some(entry("/b1", "read", 9))),
            ("/b3".to_string(), None),
        ]);
        let copied = HashMap::from([
            ("/b1".to_string(), entry("/b1", "copied", 7)),
            ("/b3".to_string(), entry("/b3", "copied", 7)),
        ]);
        let merged = newest_of(&known, &copied);
        assert_eq!(merged["/b1"].as_ref().unwrap().value, b"read");
        assert_eq!(merged["/b3"].as_ref().unwrap().value, b"copied");

        std::fs::write(&copy_path, b"{not json").unwrap();
        assert!(lock.read_copy().is_empty(), "a corrupt copy is ignored");
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_lock_file_names_the_node_or_its_digest_when_too_long() {
        assert_eq!(lock_file_name("node-1"), "ipam:node-1.flock");
        let long = "n".repeat(253);
        let name = lock_file_name(&long);
        assert!(
            name.starts_with("ipam:") && name.ends_with(".flock"),
            "{name}"
        );
        assert!(name.len() < 80, "{name}");
        assert_ne!(name, lock_file_name(&"m".repeat(253)));
    }

    #[test]
    fn a_copy_cut_short_by_a_killed_writer_is_ignored() {
        let dir = std::env::temp_dir().join(format!("calico-copy-cut-{}", std::process::id()));
        let copy_path = dir.join("node1.blocks");
        let lock = NodeIpamLock::acquire(&dir, "node1", Some(copy_path.clone())).unwrap();
        let long = BTreeMap::from([
            (
                "/b1".to_string(),
                Some(entry("/b1", "a longer value, written first", 5)),
            ),
            ("/b2".to_string(), Some(entry("/b2", "two", 6))),
        ]);
        lock.write_copy(HashMap::new(), &long);
        let whole = std::fs::read(&copy_path).unwrap();
        assert_eq!(lock.read_copy().len(), 2);
        // A shorter copy written over it, the writer killed before the file was cut to length:
        // the new copy's bytes, then what is left of the old one.
        let short = with_digest(
            br#"[{"key":"/b2","value":"x","mod_revision":7,"create_revision":1}]"#.to_vec(),
        );
        let mut torn = short.clone();
        torn.extend_from_slice(&whole[short.len()..]);
        std::fs::write(&copy_path, &torn).unwrap();
        assert!(
            lock.read_copy().is_empty(),
            "the old copy's tail was taken for the new one"
        );
        // Killed halfway through the write: the new copy's first half over the old copy.
        let mut torn = whole.clone();
        torn[..short.len() / 2].copy_from_slice(&short[..short.len() / 2]);
        std::fs::write(&copy_path, &torn).unwrap();
        assert!(lock.read_copy().is_empty(), "a half-written copy was taken");
        std::fs::write(&copy_path, &short).unwrap();
        assert_eq!(lock.read_copy()["/b2"].value, b"x");
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
