//! Where and how to reach etcd: the `etcd_*` keys of the network config and the `ETCD_*`
//! variables, resolved into [`EtcdSettings`].

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::invalid;

/// Where and how to reach etcd, resolved from the config keys and the `ETCD_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs (`http://host:port` or `https://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Client key for TLS (`etcd_key_file`, `ETCD_KEY_FILE`).
    pub key_file: Option<PathBuf>,
    /// Client certificate for TLS (`etcd_cert_file`, `ETCD_CERT_FILE`).
    pub cert_file: Option<PathBuf>,
    /// CA bundle for TLS (`etcd_ca_cert_file`, `ETCD_CA_CERT_FILE`).
    pub ca_cert_file: Option<PathBuf>,
    /// User name and password, used only when both are set (`ETCD_USERNAME`, `ETCD_PASSWORD`).
    pub credentials: Option<(String, String)>,
    /// The time all etcd work of one plugin run may take (`etcd_timeout`); each request gets
    /// what is left of it.
    pub timeout: Duration,
}

impl EtcdSettings {
    /// Plain `endpoints`, without TLS or credentials, with a time budget of `timeout`.
    pub fn plain(endpoints: Vec<String>, timeout: Duration) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            key_file: None,
            cert_file: None,
            ca_cert_file: None,
            credentials: None,
            timeout,
        }
    }
}

/// The default of `etcd_timeout`: all etcd work of one plugin run. A hung member costs far less
/// (see `datastore`); this bounds a cluster that is slow or has lost its leader.
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(10);

/// The etcd keys of the network config, as written; [`etcd_settings`] resolves them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct EtcdConfigKeys {
    /// `etcd_endpoints`: comma-separated client URLs; wins over authority and scheme.
    pub etcd_endpoints: Option<String>,
    /// `etcd_authority`: `host:port` (deprecated upstream).
    pub etcd_authority: Option<String>,
    /// `etcd_scheme`: `http` or `https` (deprecated upstream).
    pub etcd_scheme: Option<String>,
    /// `etcd_key_file`: client key for TLS.
    pub etcd_key_file: Option<String>,
    /// `etcd_cert_file`: client certificate for TLS.
    pub etcd_cert_file: Option<String>,
    /// `etcd_ca_cert_file`: CA bundle for TLS.
    pub etcd_ca_cert_file: Option<String>,
    /// `etcd_timeout`: seconds all etcd work of one plugin run may take, as written (a
    /// positive number is valid).
    pub etcd_timeout: Option<Value>,
}

/// Resolves where and how to reach etcd.
///
/// Upstream copies each config key into its `ETCD_*` variable before building the client, so a
/// config key wins over the variable; empty values count as unset. Endpoints come from
/// `etcd_endpoints`/`ETCD_ENDPOINTS`, otherwise from `<scheme>://<authority>` (defaults `http`
/// and `127.0.0.1:2379`). Credentials need both `ETCD_USERNAME` and `ETCD_PASSWORD`. An endpoint
/// that is not an `http://` or `https://` URL of a host and port, an empty entry in the list, or
/// an `etcd_timeout` that is not a positive number is an invalid config (code 7) naming the key.
pub fn etcd_settings(
    raw: &EtcdConfigKeys,
    env: &dyn Fn(&str) -> Option<String>,
) -> crate::error::Result<EtcdSettings> {
    let pick = |key: &Option<String>, var: &str| -> Option<String> {
        let set = |v: &String| !v.trim().is_empty();
        key.clone().filter(set).or_else(|| env(var).filter(set))
    };
    let listed = match (&raw.etcd_endpoints, env("ETCD_ENDPOINTS")) {
        (Some(list), _) if !list.trim().is_empty() => Some(("etcd_endpoints", list.clone())),
        (_, Some(list)) if !list.trim().is_empty() => Some(("ETCD_ENDPOINTS", list)),
        _ => None,
    };
    let endpoints = match listed {
        Some((source, list)) => endpoint_list(source, &list)?,
        None => {
            let scheme = pick(&raw.etcd_scheme, "ETCD_SCHEME").unwrap_or_else(|| "http".to_owned());
            let authority = pick(&raw.etcd_authority, "ETCD_AUTHORITY")
                .unwrap_or_else(|| "127.0.0.1:2379".to_owned());
            let endpoint = format!("{}://{}", scheme.trim(), authority.trim());
            validate_etcd_endpoint(&endpoint).map_err(|why| {
                invalid(format!(
                    "etcd_scheme and etcd_authority give etcd endpoint {endpoint:?}, which {why}"
                ))
            })?;
            vec![endpoint]
        }
    };
    let path = |key: &Option<String>, var: &str| pick(key, var).map(PathBuf::from);
    let credentials = match (env("ETCD_USERNAME"), env("ETCD_PASSWORD")) {
        (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
            Some((user, password))
        }
        _ => None,
    };
    Ok(EtcdSettings {
        endpoints,
        key_file: path(&raw.etcd_key_file, "ETCD_KEY_FILE"),
        cert_file: path(&raw.etcd_cert_file, "ETCD_CERT_FILE"),
        ca_cert_file: path(&raw.etcd_ca_cert_file, "ETCD_CA_CERT_FILE"),
        credentials,
        timeout: etcd_timeout(raw.etcd_timeout.as_ref())?,
    })
}

/// `etcd_timeout`: a positive number of seconds; absent or `null` means the default.
fn etcd_timeout(value: Option<&Value>) -> crate::error::Result<Duration> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_ETCD_TIMEOUT),
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
    };
    // The upper bound only keeps the conversion to a Duration in range; a day is plenty.
    match seconds {
        Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(invalid(format!(
            "etcd_timeout {} must be a number of seconds above 0 (at most 86400)",
            value.map(Value::to_string).unwrap_or_default()
        ))),
    }
}

/// The comma-separated endpoints of `source` (`etcd_endpoints` or `ETCD_ENDPOINTS`): every
/// entry must be an endpoint; an empty one is a typo, not something to skip.
fn endpoint_list(source: &str, list: &str) -> crate::error::Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .map(|endpoint| {
            let why = if endpoint.is_empty() {
                Err("has an empty entry".to_owned())
            } else {
                validate_etcd_endpoint(endpoint)
                    .map_err(|why| format!("has entry {endpoint:?}, which {why}"))
            };
            why.map(|()| endpoint.to_owned())
                .map_err(|why| invalid(format!("{source} {list:?} {why}")))
        })
        .collect()
}

/// An etcd endpoint is `http://` or `https://`, a host (name, IPv4 address or bracketed IPv6
/// address), an optional port and nothing else but an optional `/`. Says what is wrong.
fn validate_etcd_endpoint(endpoint: &str) -> std::result::Result<(), String> {
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Err("is not an http:// or https:// URL".to_owned());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("has no host".to_owned());
    }
    if let Some(bad) = authority
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "has {bad:?} after the scheme: only a host and a port are allowed"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "has an unclosed [ around its IPv6 address".to_owned())?;
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("has {address:?} in brackets, not an IPv6 address"));
            }
            match after {
                "" => (address, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (address, Some(port)),
                    None => return Err(format!("has {after:?} after its IPv6 address")),
                },
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return Err(format!("has port {port:?}, not a number from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config keys or environment variables of one case.
    type Pairs = &'static [(&'static str, &'static str)];

    fn keys(pairs: &[(&str, &str)]) -> EtcdConfigKeys {
        let json: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(json)).unwrap()
    }

    fn resolve(
        config: &[(&str, &str)],
        vars: &[(&str, &str)],
    ) -> crate::error::Result<EtcdSettings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        etcd_settings(&keys(config), &env)
    }

    #[test]
    fn endpoints_follow_upstream_precedence() {
        let cases: &[(Pairs, Pairs, &[&str])] = &[
            (&[], &[], &["http://127.0.0.1:2379"]),
            (
                &[("etcd_authority", "10.0.0.1:4001")],
                &[],
                &["http://10.0.0.1:4001"],
            ),
            (
                &[("etcd_scheme", "https")],
                &[],
                &["https://127.0.0.1:2379"],
            ),
            (
                &[],
                &[("ETCD_AUTHORITY", "h:1"), ("ETCD_SCHEME", "https")],
                &["https://h:1"],
            ),
            (
                &[("etcd_authority", "c:1")],
                &[("ETCD_AUTHORITY", "e:1")],
                &["http://c:1"],
            ),
            (
                &[("etcd_authority", "")],
                &[("ETCD_AUTHORITY", "e:1")],
                &["http://e:1"],
            ),
            (
                &[("etcd_endpoints", " http://a:1 , https://b:2/")],
                &[],
                &["http://a:1", "https://b:2/"],
            ),
            (
                &[(
                    "etcd_endpoints",
                    "https://[fd00::1]:2379,http://etcd-0.example",
                )],
                &[],
                &["https://[fd00::1]:2379", "http://etcd-0.example"],
            ),
            (
                &[("etcd_endpoints", "http://a:1"), ("etcd_authority", "b:2")],
                &[],
                &["http://a:1"],
            ),
            (
                &[],
                &[("ETCD_ENDPOINTS", "http://e:1,http://f:2")],
                &["http://e:1", "http://f:2"],
            ),
            (
                &[("etcd_endpoints", "http://c:1")],
                &[("ETCD_ENDPOINTS", "http://e:1")],
                &["http://c:1"],
            ),
            (
                &[("etcd_authority", "c:1")],
                &[("ETCD_ENDPOINTS", "http://e:1")],
                &["http://e:1"],
            ),
            (
                &[("etcd_endpoints", " ")],
                &[("ETCD_AUTHORITY", "e:1")],
                &["http://e:1"],
            ),
        ];
        for (config, vars, want) in cases {
            let settings = resolve(config, vars).unwrap();
            assert_eq!(settings.endpoints, *want, "config {config:?} env {vars:?}");
            assert_eq!(settings.timeout, DEFAULT_ETCD_TIMEOUT);
        }
    }

    #[test]
    fn tls_files_come_from_config_then_env() {
        let cases: &[(Pairs, Pairs, [Option<&str>; 3])] = &[
            (&[], &[], [None, None, None]),
            (
                &[
                    ("etcd_key_file", "/c/key"),
                    ("etcd_cert_file", "/c/cert"),
                    ("etcd_ca_cert_file", "/c/ca"),
                ],
                &[
                    ("ETCD_KEY_FILE", "/e/key"),
                    ("ETCD_CERT_FILE", "/e/cert"),
                    ("ETCD_CA_CERT_FILE", "/e/ca"),
                ],
                [Some("/c/key"), Some("/c/cert"), Some("/c/ca")],
            ),
            (
                &[("etcd_ca_cert_file", "/c/ca")],
                &[("ETCD_KEY_FILE", "/e/key"), ("ETCD_CERT_FILE", "/e/cert")],
                [Some("/e/key"), Some("/e/cert"), Some("/c/ca")],
            ),
        ];
        for (config, vars, [key, cert, ca]) in cases {
            let settings = resolve(config, vars).unwrap();
            let got = [
                &settings.key_file,
                &settings.cert_file,
                &settings.ca_cert_file,
            ]
            .map(|p| p.as_ref().map(|p| p.to_string_lossy().into_owned()));
            let want = [key, cert, ca].map(|p| p.map(str::to_owned));
            assert_eq!(got, want, "config {config:?} env {vars:?}");
        }
    }

    #[test]
    fn credentials_need_both_variables() {
        let cases: &[(Pairs, Option<(&str, &str)>)] = &[
            (&[], None),
            (&[("ETCD_USERNAME", "u")], None),
            (&[("ETCD_PASSWORD", "p")], None),
            (&[("ETCD_USERNAME", "u"), ("ETCD_PASSWORD", "")], None),
            (
                &[("ETCD_USERNAME", "u"), ("ETCD_PASSWORD", "p")],
                Some(("u", "p")),
            ),
        ];
        for (vars, want) in cases {
            let settings = resolve(&[], vars).unwrap();
            let want = want.map(|(u, p)| (u.to_owned(), p.to_owned()));
            assert_eq!(settings.credentials, want, "env {vars:?}");
        }
    }

    #[test]
    fn malformed_endpoints_are_invalid_config_naming_key_and_value() {
        // (config, environment, what the message must name)
        let cases: &[(Pairs, Pairs, &[&str])] = &[
            (
                &[("etcd_endpoints", "127.0.0.1:2379")],
                &[],
                &["etcd_endpoints", "127.0.0.1:2379", "http://"],
            ),
            (
                &[("etcd_endpoints", "http://a:1,unix:///run/etcd")],
                &[],
                &["etcd_endpoints", "unix:///run/etcd"],
            ),
            (
                &[],
                &[("ETCD_ENDPOINTS", "ftp://a:1")],
                &["ETCD_ENDPOINTS", "ftp://a:1"],
            ),
            (
                &[("etcd_scheme", "grpc")],
                &[],
                &["etcd_scheme", "grpc://127.0.0.1:2379"],
            ),
            (
                &[("etcd_endpoints", "http://")],
                &[],
                &["etcd_endpoints", "no host"],
            ),
            (
                &[("etcd_endpoints", ",,,")],
                &[],
                &["etcd_endpoints", "\",,,\"", "empty entry"],
            ),
            (
                &[("etcd_endpoints", "http://a:1,,http://b:2")],
                &[],
                &["etcd_endpoints", "empty entry"],
            ),
            (
                &[("etcd_endpoints", "http://a:1,")],
                &[],
                &["etcd_endpoints", "empty entry"],
            ),
            (
                &[],
                &[("ETCD_ENDPOINTS", ", ,")],
                &["ETCD_ENDPOINTS", "empty entry"],
            ),
            (
                &[("etcd_endpoints", "http://a:2379/v3")],
                &[],
                &["etcd_endpoints", "http://a:2379/v3", "'/'"],
            ),
            (
                &[("etcd_endpoints", "http://user:pw@a:1")],
                &[],
                &["etcd_endpoints", "'@'"],
            ),
            (
                &[("etcd_endpoints", "http://a b:1")],
                &[],
                &["etcd_endpoints", "' '"],
            ),
            (
                &[("etcd_endpoints", "http://a:99999")],
                &[],
                &["etcd_endpoints", "port \"99999\""],
            ),
            (
                &[("etcd_endpoints", "http://a:")],
                &[],
                &["etcd_endpoints", "port \"\""],
            ),
            (
                &[("etcd_endpoints", "http://:2379")],
                &[],
                &["etcd_endpoints", "no host"],
            ),
            (
                &[("etcd_endpoints", "https://[fd00::1:2379")],
                &[],
                &["etcd_endpoints", "unclosed ["],
            ),
            (
                &[("etcd_endpoints", "https://[fd00::zz]:2379")],
                &[],
                &["etcd_endpoints", "not an IPv6 address"],
            ),
            (
                &[("etcd_authority", "a:b:c")],
                &[],
                &["etcd_authority", "http://a:b:c"],
            ),
        ];
        for (config, vars, named) in cases {
            let err = resolve(config, vars).unwrap_err();
            assert_eq!(
                err.code(),
                crate::error::Code::InvalidConfig,
                "{config:?} {vars:?}"
            );
            for part in *named {
                assert!(err.msg().contains(part), "{err:?} should name {part}");
            }
        }
    }

    #[test]
    fn etcd_timeout_is_a_positive_number_of_seconds() {
        let timeout = |json: &str| {
            let raw: EtcdConfigKeys = serde_json::from_str(json).unwrap();
            etcd_settings(&raw, &|_| None).map(|s| s.timeout)
        };
        let valid = [
            ("{}", DEFAULT_ETCD_TIMEOUT),
            (r#"{"etcd_timeout":null}"#, DEFAULT_ETCD_TIMEOUT),
            (r#"{"etcd_timeout":3}"#, Duration::from_secs(3)),
            (r#"{"etcd_timeout":0.5}"#, Duration::from_millis(500)),
        ];
        for (json, want) in valid {
            assert_eq!(timeout(json).unwrap(), want, "{json}");
        }
        for json in [
            r#"{"etcd_timeout":0}"#,
            r#"{"etcd_timeout":-1}"#,
            r#"{"etcd_timeout":"5"}"#,
            r#"{"etcd_timeout":true}"#,
            r#"{"etcd_timeout":[]}"#,
            r#"{"etcd_timeout":1e300}"#,
        ] {
            let err = timeout(json).unwrap_err();
            assert_eq!(err.code(), crate::error::Code::InvalidConfig, "{json}");
            assert!(err.msg().contains("etcd_timeout"), "{err:?}");
        }
        assert!(DEFAULT_ETCD_TIMEOUT <= Duration::from_secs(10));
    }

    #[test]
    fn config_keys_deserialize_from_a_network_config() {
        let raw: EtcdConfigKeys = serde_json::from_str(
            r#"{"name":"n","etcd_endpoints":"http://a:1","etcd_ca_cert_file":"/ca"}"#,
        )
        .unwrap();
        assert_eq!(raw.etcd_endpoints.as_deref(), Some("http://a:1"));
        assert_eq!(raw.etcd_ca_cert_file.as_deref(), Some("/ca"));
        assert_eq!(raw.etcd_authority, None);
    }
}
