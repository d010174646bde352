//! The network config parser: any bytes give a config or a decode (6) / invalid config (7)
//! error, never a panic; an accepted config satisfies what the handlers rely on.
#![no_main]

use common::Code;
use common::cni::version;
use common::config::NetConf;
use common::log::{self, LogLevel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The `hostname` deprecation warning would flood the fuzzer's output.
    log::set_level(LogLevel::Error);
    match NetConf::parse(data, &|_| None) {
        Ok(conf) => {
            // An error about a valid config is printed under the version the config asked for.
            assert_eq!(
                version::requested_in(data),
                Some(version::requested(conf.cni_version.as_deref()))
            );
            assert!(!conf.name.is_empty());
            assert!(
                conf.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            );
            assert!(!conf.ipam.plugin.binary_name().is_empty());
            assert!(conf.mtu.is_none_or(|mtu| (68..=65535).contains(&mtu)));
            assert!(conf.log_file.as_ref().is_none_or(|p| p.is_absolute()));
            assert!(!conf.etcd.endpoints.is_empty());
            assert!(conf.ipam.ipv4_pools.iter().all(|p| p.is_ipv4()));
            assert!(conf.ipam.ipv6_pools.iter().all(|p| p.is_ipv6()));
            assert_eq!(conf.datastore_type, "etcdv2");
        }
        Err(err) => assert!(
            matches!(err.code(), Code::Decoding | Code::InvalidConfig),
            "unexpected code for {:?}: {err:?}",
            String::from_utf8_lossy(data)
        ),
    }
});
