//! Labels the runtime passes in `args`: Mesos's network labels and the `args.cni.labels` that
//! `label_endpoints` copies onto the endpoint.

use serde_json::Value;

use super::invalid;
use crate::error::Result;

/// The start of the `args.cni.labels` keys that `label_endpoints` copies onto the endpoint (the
/// libnetwork plugin's prefix for container labels).
pub const ENDPOINT_LABEL_PREFIX: &str = "org.projectcalico.label.";

pub(super) fn mesos_labels(args: Option<&Value>) -> Vec<(String, String)> {
    let labels = args
        .and_then(|a| a.pointer("/org.apache.mesos/network_info/labels/labels"))
        .and_then(Value::as_array);
    labels
        .into_iter()
        .flatten()
        .filter_map(|label| {
            let key = label.get("key")?.as_str()?;
            let value = label
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// The CNI conventions' `args.cni.labels`, `[{"key","value"}]`: the entries whose key starts
/// with [`ENDPOINT_LABEL_PREFIX`], without it; other keys belong to other consumers. Only read
/// when `label_endpoints` asks for them, so a runtime's labels never fail a config that does
/// not use them; then a list of another shape is refused rather than half read.
pub(super) fn endpoint_labels(args: Option<&Value>) -> Result<Vec<(String, String)>> {
    const KEY: &str = "args.cni.labels";
    let Some(list) = args.and_then(|a| a.pointer("/cni/labels")) else {
        return Ok(Vec::new());
    };
    let Value::Array(entries) = list else {
        return Err(invalid(format!("{KEY} must be a list, not {list}")));
    };
    let mut labels = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        let (Some(key), Some(value)) = (field("key"), field("value")) else {
            return Err(invalid(format!(
                "{KEY}[{i}] must be an object with string key and value, not {entry}"
            )));
        };
        let Some(label) = key.strip_prefix(ENDPOINT_LABEL_PREFIX) else {
            continue;
        };
        if label.is_empty() {
            return Err(invalid(format!(
                "{KEY}[{i}]: key {key:?} names no label after {ENDPOINT_LABEL_PREFIX:?}"
            )));
        }
        labels.push((label.to_string(), value.to_string()));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;
    use crate::error::Code;

    #[test]
    fn endpoint_labels_are_the_prefixed_cni_labels_when_asked_for() {
        let args = r#""args":{"cni":{"labels":[
            {"key":"org.projectcalico.label.role","value":"db"},
            {"key":"com.example.team","value":"x"},
            {"key":"org.projectcalico.label.tier","value":""}]}}"#;
        let cases = [
            ("", vec![]),
            (r#""label_endpoints":false,"#, vec![]),
            (
                r#""label_endpoints":true,"#,
                vec![("role", "db"), ("tier", "")],
            ),
        ];
        for (flag, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}},{flag}{args}}}"#);
            let got = parse(&json).unwrap().endpoint_labels;
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{flag}");
        }
        let without_args = r#"{"name":"n","ipam":{"type":"x"},"label_endpoints":true}"#;
        assert!(parse(without_args).unwrap().endpoint_labels.is_empty());
    }

    #[test]
    fn malformed_cni_labels_are_refused_naming_them_only_when_used() {
        let cases = [
            r#"{"labels":{"key":"a","value":"b"}}"#,
            r#"{"labels":"role=db"}"#,
            r#"{"labels":[{"key":"org.projectcalico.label.a"}]}"#,
            r#"{"labels":[{"key":"org.projectcalico.label.a","value":1}]}"#,
            r#"{"labels":[["org.projectcalico.label.a","b"]]}"#,
            r#"{"labels":[{"key":"org.projectcalico.label.","value":"b"}]}"#,
        ];
        for cni in cases {
            let json = format!(
                r#"{{"name":"n","ipam":{{"type":"x"}},"label_endpoints":true,"args":{{"cni":{cni}}}}}"#
            );
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{cni}");
            assert!(
                err.msg().contains("args.cni.labels"),
                "{cni}: {}",
                err.msg()
            );
            let unused = json.replace(r#""label_endpoints":true"#, r#""label_endpoints":false"#);
            assert!(parse(&unused).is_ok(), "{cni}");
        }
    }

    #[test]
    fn mesos_labels_are_read() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"args":{"org.apache.mesos":{"network_info":{"labels":{"labels":[{"key":"app","value":"web"}]}}}}}"#).unwrap();
        assert_eq!(conf.mesos_labels, [("app".to_string(), "web".to_string())]);
    }
}
