//! A node-local hint of the blocks a node has affinity to, so that the common ADD can read its
//! block without first listing the node's affinity keys.
//!
//! The hint is one small file per node and family, `<dir>/<node>.ipv4` (or `.ipv6`), with one
//! block CIDR per line. It is only ever a guess: the allocator confirms every hinted block
//! against etcd (block and affinity key) in the same read, and its commit is conditional on
//! what it read. A missing, unreadable or stale hint costs one extra read, never a wrong
//! assignment. Writes go to a temporary file that is renamed over the hint, so readers see the
//! old or the new list, never half of one. Failing to read or write the hint is logged at debug
//! level and otherwise ignored.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use super::block::{addr_to_u128, block_cidr_for, family_name};
use crate::datastore::keys::IpFamily;
use crate::log;

/// Hinted blocks read per family: with the handle and one affinity key per block, the first
/// read of an ADD stays within one etcd transaction (see `store::read_many`).
pub const MAX_HINTED_BLOCKS: usize = 32;

/// The hint files of one node in one directory.
#[derive(Debug, Clone)]
pub struct BlockHints {
    dir: PathBuf,
    file_stem: String,
}

impl BlockHints {
    /// The hints of `node` kept in `dir` (created on the first write).
    pub fn new(dir: &Path, node: &str) -> Self {
        BlockHints {
            dir: dir.to_path_buf(),
            file_stem: file_stem(node),
        }
    }

    /// The node's block copy beside its hint files (see `ipam::node_lock`).
    pub fn block_copy_path(&self) -> PathBuf {
        self.dir.join(format!("{}.blocks", self.file_stem))
    }

    /// The hint file of a family.
    pub fn path(&self, family: IpFamily) -> PathBuf {
        self.dir
            .join(format!("{}.{}", self.file_stem, family_name(family)))
    }

    /// The hinted blocks of `family`, in address order, at most [`MAX_HINTED_BLOCKS`]. Lines
    /// that are not a block CIDR of the family are skipped; a missing or unreadable file is an
    /// empty hint.
    pub fn read(&self, family: IpFamily) -> Vec<IpNetwork> {
        let path = self.path(family);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                if err.kind() != ErrorKind::NotFound {
                    log::debug(&format!("ignoring block hint {}: {err}", path.display()));
                }
                return Vec::new();
            }
        };
        parse_hint(&text, family)
    }

    /// Replaces the hint of `family` with `blocks` (any order; other families are ignored).
    /// Does nothing when the file already says the same.
    pub fn write(&self, family: IpFamily, blocks: &[IpNetwork]) {
        let text = format_hint(blocks, family);
        let path = self.path(family);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return;
        }
        if let Err(err) = crate::file::replace_atomically(&path, text.as_bytes()) {
            log::debug(&format!(
                "block hint {} not written (hints stay off until it can be): {err}",
                path.display()
            ));
        }
    }

    /// Adds `block` to the hint of its family.
    pub fn add(&self, block: IpNetwork) {
        let family = IpFamily::of(&block);
        let mut blocks = self.read(family);
        if !blocks.contains(&block) {
            blocks.push(block);
            self.write(family, &blocks);
        }
    }

    /// Removes `stale` from the hint of `family`.
    pub fn remove(&self, family: IpFamily, stale: &[IpNetwork]) {
        let blocks = self.read(family);
        if blocks.iter().any(|b| stale.contains(b)) {
            let kept: Vec<IpNetwork> = blocks.into_iter().filter(|b| !stale.contains(b)).collect();
            self.write(family, &kept);
        }
    }
}

/// The node name as one file name: bytes other than ASCII letters, digits, `-` and `_` (and a
/// `.` that is not first) are written as `%XX`, so that no node name can leave the directory.
fn file_stem(node: &str) -> String {
    let mut stem = String::with_capacity(node.len());
    for (i, byte) in node.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || (byte == b'.' && i > 0) {
            stem.push(char::from(byte));
        } else {
            stem.push_str(&format!("%{byte:02X}"));
        }
    }
    stem
}

fn parse_hint(text: &str, family: IpFamily) -> Vec<IpNetwork> {
    let blocks: BTreeSet<(u128, IpNetwork)> = text
        .lines()
        .filter_map(|line| line.trim().parse::<IpNetwork>().ok())
        .filter(|net| is_block_of(net, family))
        .map(|net| (addr_to_u128(net.network()), net))
        .collect();
    blocks
        .into_iter()
        .map(|(_, net)| net)
        .take(MAX_HINTED_BLOCKS)
        .collect()
}

fn format_hint(blocks: &[IpNetwork], family: IpFamily) -> String {
    let sorted: BTreeSet<(u128, IpNetwork)> = blocks
        .iter()
        .filter(|net| is_block_of(net, family))
        .map(|net| (addr_to_u128(net.network()), *net))
        .collect();
    sorted
        .into_iter()
        .map(|(_, net)| format!("{net}\n"))
        .collect()
}

/// True for exactly the block CIDRs of a family (right prefix, aligned base address).
fn is_block_of(net: &IpNetwork, family: IpFamily) -> bool {
    IpFamily::of(net) == family && block_cidr_for(net.ip()) == *net
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Tells apart the temporary directories of tests running at once.
    static DIRS: AtomicU64 = AtomicU64::new(0);

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "block-hint-{label}-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn hint_round_trips_sorted_per_family() {
        let dir = temp_dir("round-trip");
        let hints = BlockHints::new(&dir.join("missing/parent"), "node-1");
        assert!(hints.read(IpFamily::V4).is_empty());
        hints.write(
            IpFamily::V4,
            &[net("10.0.1.0/26"), net("10.0.0.64/26"), net("fd00::/122")],
        );
        assert_eq!(
            hints.read(IpFamily::V4),
            [net("10.0.0.64/26"), net("10.0.1.0/26")]
        );
        assert!(hints.read(IpFamily::V6).is_empty());
        hints.add(net("fd00::40/122"));
        hints.remove(IpFamily::V4, &[net("10.0.1.0/26")]);
        assert_eq!(hints.read(IpFamily::V4), [net("10.0.0.64/26")]);
        assert_eq!(hints.read(IpFamily::V6), [net("fd00::40/122")]);
        let files: Vec<String> = std::fs::read_dir(dir.join("missing/parent"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files.len(), 2, "no temporary files left: {files:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text =
            "10.0.0.0/26\nnot a cidr\n10.0.0.1/26\n10.0.0.0/24\n\u{0}\u{ff}\n  10.0.0.128/26  \n";
        assert_eq!(
            parse_hint(text, IpFamily::V4),
            [net("10.0.0.0/26"), net("10.0.0.128/26")]
        );
        assert!(parse_hint(text, IpFamily::V6).is_empty());
    }

    #[test]
    fn hint_is_capped() {
        let text: String = (0..100).map(|i| format!("10.1.{i}.0/26\n")).collect();
        assert_eq!(parse_hint(&text, IpFamily::V4).len(), MAX_HINTED_BLOCKS);
    }

    #[test]
    fn node_names_stay_inside_the_directory() {
        let cases = [
            ("node-1.example", "node-1.example"),
            ("..", "%2E."),
            ("a/b", "a%2Fb"),
            ("", ""),
        ];
        for (node, stem) in cases {
            assert_eq!(file_stem(node), stem, "{node}");
        }
        let hints = BlockHints::new(Path::new("/hints"), "../x");
        assert_eq!(hints.path(IpFamily::V6), Path::new("/hints/%2E.%2Fx.ipv6"));
    }

    #[test]
    fn unwritable_directory_is_not_an_error() {
        let dir = temp_dir("unwritable");
        std::fs::write(&dir, b"a file, not a directory").unwrap();
        let hints = BlockHints::new(&dir, "n");
        hints.write(IpFamily::V4, &[net("10.0.0.0/26")]);
        assert!(hints.read(IpFamily::V4).is_empty());
        std::fs::remove_file(&dir).unwrap();
    }
}
