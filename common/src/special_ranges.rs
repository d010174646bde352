//! Address ranges no workload may be given: loopback, link-local (where Calico's own container
//! gateway 169.254.1.1 lives), multicast, "this network", the reserved and broadcast range,
//! the unspecified address and IPv4-mapped IPv6 addresses. Every pool CIDR and every requested
//! address is checked against them wherever it enters: the admin `pool add`, `ipam.ipv4_pools`
//! and `ipam.ipv6_pools`, the pool and address annotations of a pod, and `CNI_ARGS` `IP=`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// One special-purpose range and why no workload may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// The range, e.g. `169.254.0.0/16`.
    pub cidr: &'static str,
    /// Why it is refused, e.g. `link-local, holds Calico's container gateway 169.254.1.1`.
    pub why: &'static str,
}

/// Every refused range, IPv4 first.
pub const SPECIAL_RANGES: [SpecialRange; 10] = [
    SpecialRange {
        cidr: "0.0.0.0/8",
        why: "\"this network\", never a host address",
    },
    SpecialRange {
        cidr: "127.0.0.0/8",
        why: "loopback",
    },
    SpecialRange {
        cidr: "169.254.0.0/16",
        why: "link-local, holds Calico's container gateway 169.254.1.1",
    },
    SpecialRange {
        cidr: "224.0.0.0/4",
        why: "multicast",
    },
    SpecialRange {
        cidr: "240.0.0.0/4",
        why: "reserved, holds the broadcast address 255.255.255.255",
    },
    SpecialRange {
        cidr: "::/128",
        why: "the unspecified address",
    },
    SpecialRange {
        cidr: "::1/128",
        why: "loopback",
    },
    SpecialRange {
        cidr: "::ffff:0:0/96",
        why: "IPv4-mapped addresses",
    },
    SpecialRange {
        cidr: "fe80::/10",
        why: "link-local, where Calico's IPv6 container gateway lives",
    },
    SpecialRange {
        cidr: "ff00::/8",
        why: "multicast",
    },
];

impl SpecialRange {
    /// The range as a network. The table is fixed and every entry parses (a unit test says so);
    /// should one not, it matches nothing rather than failing a request.
    fn network(&self) -> Option<IpNetwork> {
        self.cidr.parse().ok()
    }
}

/// The first special range `net` overlaps, if any: containing it, inside it, or equal.
pub fn special_range_overlapping(net: IpNetwork) -> Option<SpecialRange> {
    SPECIAL_RANGES.into_iter().find(|range| {
        range.network().is_some_and(|special| {
            special.is_ipv4() == net.is_ipv4()
                && (special.contains(net.network()) || net.contains(special.network()))
        })
    })
}

/// The special range holding `addr`, if any.
pub fn special_range_holding(addr: IpAddr) -> Option<SpecialRange> {
    special_range_overlapping(IpNetwork::from(addr))
}

/// Why `net` cannot be a pool, naming it: `None` when it overlaps no special range.
pub fn pool_problem(net: IpNetwork) -> Option<String> {
    special_range_overlapping(net)
        .map(|range| format!("pool {net} overlaps {} ({})", range.cidr, range.why))
}

/// Why `addr` cannot be given to a workload, naming it: `None` when it is an ordinary address.
pub fn address_problem(addr: IpAddr) -> Option<String> {
    special_range_holding(addr)
        .map(|range| format!("address {addr} is in {} ({})", range.cidr, range.why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_parses() {
        for range in SPECIAL_RANGES {
            assert!(range.network().is_some(), "{}", range.cidr);
        }
    }

    #[test]
    fn pools_overlapping_a_special_range_are_refused_naming_it() {
        let refused = [
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("127.1.0.0/16", "127.0.0.0/8"),
            ("169.254.0.0/16", "169.254.0.0/16"),
            ("169.254.1.0/24", "169.254.0.0/16"),
            ("169.0.0.0/8", "169.254.0.0/16"),
            ("224.0.0.0/4", "224.0.0.0/4"),
            ("239.1.0.0/16", "224.0.0.0/4"),
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/8"),
            ("255.255.255.0/24", "240.0.0.0/4"),
            ("128.0.0.0/1", "169.254.0.0/16"),
            ("::/128", "::/128"),
            ("::/0", "::/128"),
            ("::1/128", "::1/128"),
            ("::ffff:0:0/96", "::ffff:0:0/96"),
            ("::ffff:10.0.0.0/120", "::ffff:0:0/96"),
            ("fe80::/64", "fe80::/10"),
            ("fe80::/10", "fe80::/10"),
            ("ff02::/16", "ff00::/8"),
            ("ff00::/8", "ff00::/8"),
        ];
        for (pool, special) in refused {
            let problem = pool_problem(pool.parse().unwrap()).unwrap_or_default();
            assert!(
                problem.contains(pool) && problem.contains(special),
                "{pool}: {problem:?}"
            );
        }
        for pool in [
            "10.0.0.0/8",
            "192.168.0.0/16",
            "172.16.0.0/12",
            "100.64.0.0/10",
            "fd00::/64",
            "2001:db8::/48",
            "fec0::/10",
        ] {
            assert_eq!(pool_problem(pool.parse().unwrap()), None, "{pool}");
        }
    }

    #[test]
    fn special_addresses_are_named() {
        for (addr, special) in [
            ("169.254.1.1", "169.254.0.0/16"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("0.0.0.0", "0.0.0.0/8"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("::ffff:10.0.0.1", "::ffff:0:0/96"),
            ("fe80::1", "fe80::/10"),
            ("ff02::1", "ff00::/8"),
        ] {
            let problem = address_problem(addr.parse().unwrap()).unwrap_or_default();
            assert!(
                problem.contains(addr) && problem.contains(special),
                "{addr}: {problem:?}"
            );
        }
        for addr in ["10.0.0.1", "192.168.1.1", "fd00::1", "2001:db8::1"] {
            assert_eq!(address_problem(addr.parse().unwrap()), None, "{addr}");
        }
    }
}
