//! Network configs read from files (`tests/fixtures/`, `conf-examples/`), with `@NAME@`
//! placeholders filled in per test, and small edits for the cases a test varies.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A network config as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf(Value);

impl NetConf {
    /// Loads `tests/fixtures/<file>` and replaces every `@NAME@` with its value from `vars`.
    /// Panics when a placeholder is left over.
    pub fn fixture(file: &str, vars: &[(&str, &str)]) -> NetConf {
        NetConf::load(&fixtures_dir().join(file), vars)
    }

    /// Loads any config file, filling placeholders as [`NetConf::fixture`] does.
    pub fn load(path: &Path, vars: &[(&str, &str)]) -> NetConf {
        let mut text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read config {}: {e}", path.display()));
        for (name, value) in vars {
            // Values go inside JSON strings: escape them the way JSON does.
            let escaped = serde_json::to_string(value).expect("string to JSON");
            text = text.replace(&format!("@{name}@"), &escaped[1..escaped.len() - 1]);
        }
        if let Some(start) = text.find('@') {
            let rest = &text[start + 1..];
            if let Some(end) = rest.find('@') {
                let name = &rest[..end];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    panic!("placeholder @{name}@ in {} has no value", path.display());
                }
            }
        }
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("config {} is not JSON: {e}", path.display()));
        NetConf(value)
    }

    /// The same config with a top-level key set.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> NetConf {
        self.object_mut().insert(key.to_string(), value.into());
        self
    }

    /// The same config with a key of the `ipam` object set.
    pub fn set_ipam(mut self, key: &str, value: impl Into<Value>) -> NetConf {
        let ipam = self
            .object_mut()
            .entry("ipam")
            .or_insert_with(|| Value::Object(Default::default()));
        ipam.as_object_mut()
            .expect("`ipam` is an object")
            .insert(key.to_string(), value.into());
        self
    }

    /// The same config without a top-level key.
    pub fn without(mut self, key: &str) -> NetConf {
        self.object_mut().remove(key);
        self
    }

    /// `cniVersion`, if present.
    pub fn cni_version(&self) -> Option<&str> {
        self.0.get("cniVersion").and_then(Value::as_str)
    }

    /// The JSON value.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The bytes to write to a plugin's stdin.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("config to JSON")
    }

    fn object_mut(&mut self) -> &mut serde_json::Map<String, Value> {
        self.0
            .as_object_mut()
            .expect("a network config is a JSON object")
    }
}

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `conf-examples/` at the workspace root.
pub fn conf_examples_dir() -> PathBuf {
    crate::workspace_dir().join("conf-examples")
}

/// Every `*.conf` and `*.conflist` file of `conf-examples/`, sorted.
pub fn conf_examples() -> Vec<PathBuf> {
    let dir = conf_examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "conf" || ext == "conflist")
        })
        .collect();
    files.sort();
    files
}

/// The config `calico` gets from a conf example: a `.conf` as it is; from a `.conflist`, its
/// `calico` entry with the list's `name` and `cniVersion` added, as libcni does. Panics when a
/// list has no `calico` entry or it is not the first (chained plugins need its result).
pub fn calico_conf_of_example(path: &Path) -> NetConf {
    let file = NetConf::load(path, &[]);
    if path.extension().is_none_or(|ext| ext != "conflist") {
        return file;
    }
    let list = file.value();
    let plugins = list["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no plugins list", path.display()));
    let first = plugins
        .first()
        .filter(|p| p["type"] == "calico")
        .unwrap_or_else(|| panic!("{}: calico is not the first plugin", path.display()));
    let mut conf = NetConf(first.clone()).set("name", list["name"].clone());
    if let Some(version) = list.get("cniVersion") {
        conf = conf.set("cniVersion", version.clone());
    }
    conf
}
