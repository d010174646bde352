//! CNI specification versions: the supported list and the default for a missing `cniVersion`.

use std::fmt;

use serde_json::Value;

/// A CNI specification version this project speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.1.0: `ip4`/`ip6` results.
    V0_1_0,
    /// 0.2.0: adds VERSION.
    V0_2_0,
    /// 0.3.0: `interfaces` and `ips` results.
    V0_3_0,
    /// 0.3.1: result key typo fixed.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: `ips[].version` removed.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC.
    V1_1_0,
}

/// Every version, oldest first. Also the order `supportedVersions` is printed in.
pub const ALL_VERSIONS: [CniVersion; 7] = [
    CniVersion::V0_1_0,
    CniVersion::V0_2_0,
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

/// The version a config without `cniVersion` means (the reference libraries read it as 0.1.0).
pub const DEFAULT_VERSION: CniVersion = CniVersion::V0_1_0;

/// The version a config's `cniVersion` asks for: as written, or [`DEFAULT_VERSION`] when it is
/// absent or empty. Not necessarily one this project speaks.
pub fn requested(written: Option<&str>) -> String {
    written
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_VERSION.as_str())
        .to_string()
}

/// The `cniVersion` a config asks for, read leniently so that an error about the rest of the
/// config can still be printed in that version: `None` when the bytes are not a JSON object.
pub fn requested_in(config: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(config).ok()?;
    let written = value.as_object()?.get("cniVersion").and_then(Value::as_str);
    Some(requested(written))
}

impl CniVersion {
    /// The version string as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses an exact version string; libcni matches versions by string equality too.
    pub fn parse(s: &str) -> Option<CniVersion> {
        ALL_VERSIONS.into_iter().find(|v| v.as_str() == s)
    }

    /// The versions a plugin advertises: 1.1.0 only when it implements STATUS and GC.
    pub fn supported(with_status_and_gc: bool) -> &'static [CniVersion] {
        if with_status_and_gc {
            &ALL_VERSIONS
        } else {
            &ALL_VERSIONS[..6]
        }
    }

    /// The supported versions as strings, for error details and VERSION output.
    pub fn supported_strings(with_status_and_gc: bool) -> Vec<&'static str> {
        Self::supported(with_status_and_gc)
            .iter()
            .map(|v| v.as_str())
            .collect()
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_exactly() {
        for v in ALL_VERSIONS {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["", "0.3", "1.0", "v1.0.0", "1.7.0", "0.4.0 "] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_config_without_a_version_asks_for_the_default() {
        let cases = [
            (r#"{"cniVersion":"0.4.0"}"#, Some("0.4.0")),
            (r#"{"cniVersion":"9.9.9"}"#, Some("9.9.9")),
            (r#"{"cniVersion":""}"#, Some("0.1.0")),
            (r#"{"cniVersion":5}"#, Some("0.1.0")),
            ("{}", Some("0.1.0")),
            ("[]", None),
            ("{", None),
        ];
        for (config, want) in cases {
            assert_eq!(requested_in(config.as_bytes()).as_deref(), want, "{config}");
        }
    }

    #[test]
    fn supported_list_is_ordered_and_gated() {
        assert_eq!(
            CniVersion::supported_strings(false),
            ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
        );
        assert_eq!(CniVersion::supported_strings(true).last(), Some(&"1.1.0"));
    }
}
