//! IP pools (`/calico/v1/ipam/v{4,6}/pool/<cidr>`), the global IPAM config
//! (`/calico/ipam/v2/config`), and the operator commands that add, list and remove pools.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::block::{AllocationBlock, block_prefix, family_name, is_network_address};
use super::store::Store;
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{self, Condition, Entry, Txn, Write};
use crate::error::{Code, Error, Kind, Result, codes};

/// Felix's global switch for IP-in-IP, set when a pool with IP-in-IP is added (as calicoctl v1
/// does), so that Felix creates `tunl0`.
const IPIP_ENABLED_KEY: &str = "/calico/v1/config/IpInIpEnabled";

/// The IP-in-IP interface name Calico v1 writes into pools that use IP-in-IP.
const IPIP_INTERFACE: &str = "tunl0";

/// Every node's IPAM data, for finding all affinities to a pool's blocks. (`keys` builds only
/// per-node prefixes.)
const ALL_IPAM_HOSTS_PREFIX: &str = "/calico/ipam/v2/host/";

/// The parent of both families' pool prefixes (`keys::pools_prefix`).
const ALL_POOLS_PREFIX: &str = "/calico/v1/ipam/";

/// How often a pool removal re-reads and retries when blocks change underneath it.
const POOL_REMOVE_ATTEMPTS: usize = 10;

/// One IP pool, in the JSON libcalico-go v1 writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPool {
    /// The pool's network.
    #[serde(with = "cidr_string")]
    pub cidr: IpNetwork,
    /// `tunl0` when IP-in-IP is used for the pool, else empty.
    #[serde(default)]
    pub ipip: String,
    /// `always`, `cross-subnet`, or empty.
    #[serde(default)]
    pub ipip_mode: String,
    /// Outgoing traffic to destinations outside every pool is masqueraded.
    #[serde(default)]
    pub masquerade: bool,
    /// Calico IPAM may allocate from the pool (the inverse of `disabled`).
    #[serde(default = "default_true")]
    pub ipam: bool,
    /// No new addresses are allocated from the pool.
    #[serde(default)]
    pub disabled: bool,
}

fn default_true() -> bool {
    true
}

mod cidr_string {
    use ipnetwork::IpNetwork;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &IpNetwork, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<IpNetwork, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What an operator asks for when adding a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The pool's network.
    pub cidr: IpNetwork,
    /// Create the pool disabled.
    pub disabled: bool,
    /// Use IP-in-IP (mode `always`) for the pool.
    pub ipip: bool,
    /// Masquerade outgoing traffic.
    pub nat_outgoing: bool,
}

impl IpPool {
    /// The stored value for an operator's request.
    pub fn from_spec(spec: &PoolSpec) -> IpPool {
        IpPool {
            cidr: spec.cidr,
            ipip: if spec.ipip {
                IPIP_INTERFACE.to_string()
            } else {
                String::new()
            },
            ipip_mode: if spec.ipip {
                "always".to_string()
            } else {
                String::new()
            },
            masquerade: spec.nat_outgoing,
            ipam: !spec.disabled,
            disabled: spec.disabled,
        }
    }

    /// Decodes a pool read from etcd key `key`.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<IpPool> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                codes::DATASTORE,
                format!("decode pool at etcd key {key}: {e}"),
            )
        })
    }

    /// The stored JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings and booleans always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// True when addresses may be allocated from the pool.
    pub fn is_enabled(&self) -> bool {
        !self.disabled
    }
}

/// A pool together with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPool {
    /// The pool.
    pub pool: IpPool,
    /// Its etcd key.
    pub key: String,
    /// Its `mod_revision`, for compare-and-swap.
    pub revision: i64,
}

/// The global IPAM configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamConfig {
    /// Only a block's affine node may allocate from it; no borrowing.
    pub strict_affinity: bool,
    /// Nodes claim new blocks as needed.
    pub auto_allocate_blocks: bool,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
        }
    }
}

#[derive(Deserialize)]
struct IpamConfigJson {
    // libcalico-go omits false values, so a missing field means false.
    #[serde(default)]
    strict_affinity: bool,
    #[serde(default)]
    auto_allocate_blocks: bool,
}

/// Reads the IPAM config; the defaults when the key does not exist.
pub fn read_ipam_config(store: &dyn Store) -> Result<IpamConfig> {
    let Some(entry) = store.get(keys::IPAM_CONFIG)? else {
        return Ok(IpamConfig::default());
    };
    let raw: IpamConfigJson = serde_json::from_slice(&entry.value).map_err(|e| {
        Error::new(
            codes::DATASTORE,
            format!("decode ipam config at etcd key {}: {e}", keys::IPAM_CONFIG),
        )
    })?;
    Ok(IpamConfig {
        strict_affinity: raw.strict_affinity,
        auto_allocate_blocks: raw.auto_allocate_blocks,
    })
}

/// Every pool of a family, in key order.
pub fn list_pools(store: &dyn Store, family: IpFamily) -> Result<Vec<StoredPool>> {
    store
        .list(&keys::pools_prefix(family))?
        .iter()
        .map(stored_pool)
        .collect()
}

/// Every pool of both families, IPv4 first, in one request: the listing of the common parent
/// of both families' pool keys, where keys that are not pools are skipped.
pub fn list_all_pools(store: &dyn Store) -> Result<Vec<StoredPool>> {
    let mut pools: Vec<StoredPool> = store
        .list(ALL_POOLS_PREFIX)?
        .iter()
        .filter(|entry| keys::parse_pool(&entry.key).is_some())
        .map(stored_pool)
        .collect::<Result<_>>()?;
    pools.sort_by_key(|p| IpFamily::of(&p.pool.cidr) == IpFamily::V6);
    Ok(pools)
}

fn stored_pool(entry: &Entry) -> Result<StoredPool> {
    Ok(StoredPool {
        pool: IpPool::from_json(&entry.key, &entry.value)?,
        key: entry.key.clone(),
        revision: entry.mod_revision,
    })
}

/// Checks an operator's pool CIDR: a network address, no smaller than one block, overlapping
/// no special-purpose range ([`crate::special_ranges`]).
///
/// Pools smaller than a block are refused (as Calico v1's Python tools did): every block
/// would straddle the pool boundary. Allocation still copes with such pools when another tool
/// created them, by never handing out the block's ordinals outside the pool.
pub fn validate_pool_cidr(cidr: IpNetwork) -> Result<()> {
    let family = IpFamily::of(&cidr);
    if let Some(problem) = crate::special_ranges::pool_problem(cidr) {
        return Err(Error::new(Code::InvalidConfig, problem));
    }
    if !is_network_address(cidr) {
        let fixed = IpNetwork::new(cidr.network(), cidr.prefix())
            .map_or_else(|_| cidr.to_string(), |n| n.to_string());
        return Err(Error::new(
            Code::InvalidConfig,
            format!("pool cidr {cidr} has host bits set (did you mean {fixed}?)"),
        ));
    }
    if cidr.prefix() > block_prefix(family) {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "pool cidr {cidr} is smaller than one {} block (/{})",
                family_name(family),
                block_prefix(family)
            ),
        ));
    }
    Ok(())
}

/// Creates a pool. Refuses an invalid CIDR, an existing pool and an overlap with another pool.
pub fn add_pool(store: &dyn Store, spec: &PoolSpec) -> Result<IpPool> {
    validate_pool_cidr(spec.cidr)?;
    let family = IpFamily::of(&spec.cidr);
    let existing = list_pools(store, family)?;
    if let Some(other) = existing.iter().find(|p| overlaps(p.pool.cidr, spec.cidr)) {
        let msg = if other.pool.cidr == spec.cidr {
            format!("pool {} already exists", spec.cidr)
        } else {
            format!(
                "pool {} overlaps existing pool {}",
                spec.cidr, other.pool.cidr
            )
        };
        return Err(Error::new(codes::IPAM, msg));
    }
    let pool = IpPool::from_spec(spec);
    let key = keys::pool(&spec.cidr);
    // Every existing pool of the family is a condition too, so that two concurrent adds of
    // overlapping pools cannot both succeed.
    let mut conditions = vec![Condition::Absent(key.clone())];
    conditions.extend(
        existing
            .iter()
            .map(|p| Condition::Revision(p.key.clone(), p.revision)),
    );
    let mut writes = vec![Write::Put(key.clone(), pool.to_json())];
    if spec.ipip {
        writes.push(Write::Put(IPIP_ENABLED_KEY.to_string(), b"true".to_vec()));
    }
    let outcome = store.txn(&Txn {
        conditions,
        writes,
        reads_on_failure: Vec::new(),
    })?;
    if !outcome.committed {
        return Err(Error::new(
            codes::CONFLICT,
            format!("pool {} changed concurrently, try again", spec.cidr),
        ));
    }
    Ok(pool)
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Removes a pool together with its empty blocks and their affinities. Refused while any
/// address in the pool is allocated.
///
/// The pool is first disabled, so that no node claims a new block in it meanwhile (block claims
/// are conditional on the pool's revision); the final deletion is conditional on the pool and
/// on every block it removes. When refused, the pool is put back as it was.
pub fn remove_pool(store: &dyn Store, cidr: IpNetwork) -> Result<()> {
    let key = keys::pool(&cidr);
    let Some(entry) = store.get(&key)? else {
        return Err(
            Error::new(codes::IPAM, format!("pool {cidr} does not exist"))
                .with_kind(Kind::NotFound),
        );
    };
    let original = stored_pool(&entry)?;
    let disabled_revision = disable_pool(store, &original)?;
    for _ in 0..POOL_REMOVE_ATTEMPTS {
        match delete_disabled_pool(store, cidr, &key, disabled_revision) {
            Ok(true) => return Ok(()),
            Ok(false) => continue,
            Err(err) => {
                restore_pool(store, &original, &key, disabled_revision);
                return Err(err);
            }
        }
    }
    restore_pool(store, &original, &key, disabled_revision);
    Err(Error::new(
        codes::CONFLICT,
        format!("pool {cidr}: blocks kept changing during removal, try again"),
    ))
}

/// Writes the pool back disabled; returns the new revision (read back).
fn disable_pool(store: &dyn Store, stored: &StoredPool) -> Result<i64> {
    let mut disabled = stored.pool.clone();
    disabled.disabled = true;
    disabled.ipam = false;
    let txn = Txn {
        conditions: vec![Condition::Revision(stored.key.clone(), stored.revision)],
        writes: vec![Write::Put(stored.key.clone(), disabled.to_json())],
        reads_on_failure: Vec::new(),
    };
    if !store.txn(&txn)?.committed {
        return Err(Error::new(
            codes::CONFLICT,
            format!("pool {} changed concurrently, try again", stored.pool.cidr),
        ));
    }
    let entry = store.get(&stored.key)?.ok_or_else(|| {
        Error::new(
            codes::CONFLICT,
            format!("pool {} was removed concurrently", stored.pool.cidr),
        )
    })?;
    Ok(entry.mod_revision)
}

/// One attempt: true when deleted, false when a block changed in between (retry).
fn delete_disabled_pool(
    store: &dyn Store,
    cidr: IpNetwork,
    key: &str,
    revision: i64,
) -> Result<bool> {
    let family = IpFamily::of(&cidr);
    let mut blocks = Vec::new();
    for entry in store.list(&keys::blocks_prefix(family))? {
        let Some(block_cidr) = keys::parse_block(&entry.key) else {
            continue;
        };
        if !cidr.contains(block_cidr.network()) {
            continue;
        }
        let block = AllocationBlock::from_json(&entry.key, &entry.value)?;
        let used = block.allocations.iter().flatten().count();
        if used > 0 {
            return Err(Error::new(
                codes::IPAM,
                format!(
                    "pool {cidr} still has {used} allocated addresses in block {block_cidr}; release them first"
                ),
            ));
        }
        blocks.push(entry);
    }
    let affinities: Vec<String> = store
        .list_keys(ALL_IPAM_HOSTS_PREFIX)?
        .into_iter()
        .filter(|k| keys::parse_host_affinity(k).is_some_and(|(_, b)| cidr.contains(b.network())))
        .collect();
    let mut conditions = vec![Condition::Revision(key.to_string(), revision)];
    conditions.extend(
        blocks
            .iter()
            .map(|b| Condition::Revision(b.key.clone(), b.mod_revision)),
    );
    let mut writes = vec![Write::Delete(key.to_string())];
    writes.extend(blocks.iter().map(|b| Write::Delete(b.key.clone())));
    writes.extend(affinities.into_iter().map(Write::Delete));
    let txn = Txn {
        conditions,
        writes,
        reads_on_failure: Vec::new(),
    };
    let outcome = store.txn(&txn)?;
    if !outcome.committed {
        datastore::log_conflict(&txn, &outcome.current);
    }
    Ok(outcome.committed)
}

/// Best effort: puts the pool back as it was before a refused removal.
fn restore_pool(store: &dyn Store, original: &StoredPool, key: &str, disabled_revision: i64) {
    let txn = Txn {
        conditions: vec![Condition::Revision(key.to_string(), disabled_revision)],
        writes: vec![Write::Put(key.to_string(), original.pool.to_json())],
        reads_on_failure: Vec::new(),
    };
    if let Err(err) = store.txn(&txn) {
        eprintln!(
            "pool {}: could not re-enable after refused removal: {err}",
            original.pool.cidr
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::store::MemoryStore;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn spec(cidr: &str) -> PoolSpec {
        PoolSpec {
            cidr: net(cidr),
            disabled: false,
            ipip: false,
            nat_outgoing: false,
        }
    }

    #[test]
    fn pool_json_matches_libcalico_go() {
        let pool = IpPool::from_spec(&PoolSpec {
            cidr: net("192.168.0.0/16"),
            disabled: false,
            ipip: true,
            nat_outgoing: true,
        });
        assert_eq!(
            String::from_utf8(pool.to_json()).unwrap(),
            r#"{"cidr":"192.168.0.0/16","ipip":"tunl0","ipip_mode":"always","masquerade":true,"ipam":true,"disabled":false}"#
        );
        let python = IpPool::from_json("k", br#"{"cidr":"10.0.0.0/8","disabled":true}"#).unwrap();
        assert!(!python.is_enabled());
        assert!(python.ipip.is_empty());
    }

    #[test]
    fn pool_cidr_validation() {
        let cases = [
            ("10.0.0.0/16", true),
            ("10.0.0.0/26", true),
            ("10.0.0.0/27", false),
            ("10.0.0.1/24", false),
            ("fd00::/64", true),
            ("fd00::/122", true),
            ("fd00::/123", false),
        ];
        for (cidr, ok) in cases {
            assert_eq!(validate_pool_cidr(net(cidr)).is_ok(), ok, "{cidr}");
        }
    }

    #[test]
    fn pool_add_refuses_special_ranges_and_writes_nothing() {
        let store = MemoryStore::new();
        for (bad, special) in [
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("169.254.0.0/16", "169.254.0.0/16"),
            ("169.254.1.0/24", "169.254.0.0/16"),
            ("224.0.0.0/4", "224.0.0.0/4"),
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("255.255.255.0/24", "240.0.0.0/4"),
            ("0.0.0.0/0", "0.0.0.0/8"),
            ("fe80::/64", "fe80::/10"),
            ("ff00::/8", "ff00::/8"),
            ("::ffff:0:0/96", "::ffff:0:0/96"),
            ("::/64", "::/128"),
        ] {
            let err = add_pool(&store, &spec(bad)).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{bad}");
            assert!(
                err.msg().contains(bad) && err.msg().contains(special),
                "{bad}: {}",
                err.msg()
            );
        }
        assert!(store.dump().is_empty(), "{:?}", store.dump());
    }

    #[test]
    fn add_refuses_duplicates_and_overlaps() {
        let store = MemoryStore::new();
        add_pool(&store, &spec("10.0.0.0/16")).unwrap();
        for bad in ["10.0.0.0/16", "10.0.1.0/24", "10.0.0.0/8"] {
            let err = add_pool(&store, &spec(bad)).unwrap_err();
            assert_eq!(err.code(), codes::IPAM, "{bad}");
            assert!(err.msg().contains(bad), "{}", err.msg());
        }
        add_pool(&store, &spec("10.1.0.0/16")).unwrap();
        add_pool(&store, &spec("fd00::/64")).unwrap();
        let all = list_all_pools(&store).unwrap();
        let cidrs: Vec<String> = all.iter().map(|p| p.pool.cidr.to_string()).collect();
        assert_eq!(cidrs, ["10.0.0.0/16", "10.1.0.0/16", "fd00::/64"]);
        assert!(
            store
                .get("/calico/v1/ipam/v4/pool/10.1.0.0-16")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn ipip_pool_enables_felix_ipip() {
        let store = MemoryStore::new();
        add_pool(
            &store,
            &PoolSpec {
                ipip: true,
                ..spec("10.0.0.0/16")
            },
        )
        .unwrap();
        assert_eq!(store.get(IPIP_ENABLED_KEY).unwrap().unwrap().value, b"true");
    }

    #[test]
    fn ipam_config_defaults_and_go_omitempty() {
        let store = MemoryStore::new();
        assert_eq!(read_ipam_config(&store).unwrap(), IpamConfig::default());
        store.put(keys::IPAM_CONFIG, br#"{"strict_affinity":true}"#);
        assert_eq!(
            read_ipam_config(&store).unwrap(),
            IpamConfig {
                strict_affinity: true,
                auto_allocate_blocks: false
            }
        );
    }

    #[test]
    fn remove_deletes_empty_blocks_and_affinities_but_refuses_allocations() {
        let store = MemoryStore::new();
        add_pool(&store, &spec("10.0.0.0/24")).unwrap();
        let empty =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "n1", false, net("10.0.0.0/24"));
        let mut used =
            AllocationBlock::new_affine(net("10.0.0.64/26"), "n2", false, net("10.0.0.0/24"));
        used.assign_next("h");
        store.put(&keys::block(&empty.cidr), &empty.to_json());
        store.put(&keys::host_affinity("n1", &empty.cidr), b"{}");
        store.put(&keys::block(&used.cidr), &used.to_json());
        store.put(&keys::host_affinity("n2", &used.cidr), b"{}");

        let err = remove_pool(&store, net("10.0.0.0/24")).unwrap_err();
        assert!(err.msg().contains("10.0.0.64/26"), "{}", err.msg());
        let pool = &list_pools(&store, IpFamily::V4).unwrap()[0].pool;
        assert!(pool.is_enabled(), "refused removal restores the pool");

        used.release_handle("h");
        store.put(&keys::block(&used.cidr), &used.to_json());
        remove_pool(&store, net("10.0.0.0/24")).unwrap();
        assert!(store.dump().is_empty(), "{:?}", store.dump());
        assert_eq!(
            remove_pool(&store, net("10.0.0.0/24")).unwrap_err().kind(),
            Kind::NotFound
        );
    }
}
