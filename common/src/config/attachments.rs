//! GC's list of the attachments to keep (`cni.dev/valid-attachments`).

use serde_json::Value;

use super::invalid;
use super::names::validate_name;
use crate::dataplane::veth::ifname_problem;
use crate::error::Result;

/// One entry of GC's list of valid attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// GC's attachments to keep, from `cni.dev/valid-attachments` or else the older
/// `cni.dev/attachments` (`null` counts as absent). Each entry is `{"containerID","ifname"}`
/// with a valid container id and interface name; anything else is refused naming the entry, so
/// a malformed list can never be read as "nothing is valid".
pub(super) fn gc_attachments(
    valid: Option<Value>,
    older: Option<Value>,
) -> Result<Option<Vec<Attachment>>> {
    let (key, list) = match (valid, older) {
        (Some(list), _) if !list.is_null() => ("cni.dev/valid-attachments", list),
        (_, Some(list)) if !list.is_null() => ("cni.dev/attachments", list),
        _ => return Ok(None),
    };
    let Value::Array(entries) = list else {
        return Err(invalid(format!("{key} must be a list, not {list}")));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = |name: &str| -> Result<String> {
                entry
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        invalid(format!(
                            "{key}[{i}] must be an object with string {name}, not {entry}"
                        ))
                    })
            };
            let attachment = Attachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            };
            validate_name(&format!("{key}[{i}].containerID"), &attachment.container_id)?;
            if let Some(problem) = ifname_problem(&attachment.ifname) {
                return Err(invalid(format!(
                    "{key}[{i}].ifname {:?} {problem}",
                    attachment.ifname
                )));
            }
            Ok(attachment)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;
    use crate::error::Code;

    #[test]
    fn gc_attachments_of_the_wrong_shape_are_refused_naming_the_entry() {
        let cases = [
            (
                r#""cni.dev/valid-attachments":"c1""#,
                "cni.dev/valid-attachments",
            ),
            (
                r#""cni.dev/valid-attachments":{"containerID":"c1"}"#,
                "cni.dev/valid-attachments",
            ),
            (
                r#""cni.dev/valid-attachments":["c1"]"#,
                "cni.dev/valid-attachments[0]",
            ),
            (
                r#""cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"ifname":"eth0"}]"#,
                "cni.dev/valid-attachments[1]",
            ),
            (
                r#""cni.dev/valid-attachments":[{"containerID":5,"ifname":"eth0"}]"#,
                "containerID",
            ),
            (
                r#""cni.dev/valid-attachments":[{"containerID":"../c1","ifname":"eth0"}]"#,
                "cni.dev/valid-attachments[0].containerID",
            ),
            (
                r#""cni.dev/attachments":[{"containerID":"c1","ifname":"a/b"}]"#,
                "cni.dev/attachments[0].ifname",
            ),
        ];
        for (key, named) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}},{key}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{json}");
            assert!(err.msg().contains(named), "{json}: {}", err.msg());
        }
        let conf =
            parse(r#"{"name":"n","ipam":{"type":"x"},"cni.dev/valid-attachments":null}"#).unwrap();
        assert_eq!(conf.valid_attachments, None);
    }

    #[test]
    fn gc_attachments_come_from_either_key() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"cni.dev/attachments":[{"containerID":"c","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "c");
    }
}
