//! Results and `prevResult`s in any version's shape: decoding never panics, and printing a
//! decoded result in any version and decoding that again is stable (exactly the same result
//! for the 0.3.0+ shapes, which lose nothing).
#![no_main]

use common::cni::CniResult;
use common::cni::version::{ALL_VERSIONS, CniVersion};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(text) = value.get("cniVersion").and_then(Value::as_str)
        && let Some(version) = CniVersion::parse(text)
    {
        assert_eq!(version.as_str(), text);
    }
    let Ok(result) = CniResult::from_json(&value) else {
        return;
    };
    for version in ALL_VERSIONS {
        let printed = result.to_json(version);
        let again = CniResult::from_json(&printed)
            .unwrap_or_else(|e| panic!("{version} output does not decode: {e:?}\n{printed}"));
        assert_eq!(again.to_json(version), printed, "{version} is not stable");
        if version >= CniVersion::V0_3_0 {
            assert_eq!(again, result, "{version} lost something\n{printed}");
        }
    }
});
