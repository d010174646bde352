//! `CNI_ARGS`: any string is parsed or refused with code 4; what the plugin forwards to its
//! IPAM plugin parses back to the same pod and address.
#![no_main]

use std::net::IpAddr;

use common::Code;
use common::cni::CniArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let args = match CniArgs::parse(raw) {
        Ok(args) => args,
        Err(err) => {
            assert_eq!(err.code(), Code::InvalidEnvironment, "{raw:?}");
            return;
        }
    };
    assert_eq!(args.raw, raw);
    let forwarded = CniArgs::parse(&args.for_delegate())
        .unwrap_or_else(|e| panic!("for_delegate of {raw:?} does not parse: {e:?}"));
    assert_eq!(forwarded.k8s_pod(), args.k8s_pod(), "{raw:?}");
    assert_eq!(forwarded.ip, args.ip, "{raw:?}");
    let ip: IpAddr = "fd00::7".parse().unwrap_or(IpAddr::from([10, 0, 0, 7]));
    let asked = CniArgs::parse(&args.with_ip(ip).raw)
        .unwrap_or_else(|e| panic!("with_ip of {raw:?} does not parse: {e:?}"));
    assert_eq!(asked.ip, Some(ip), "{raw:?}");
    assert_eq!(asked.k8s_pod(), args.k8s_pod(), "{raw:?}");
});
