//! Endpoint labels: Mesos labels from the config's `args`, made valid for Calico.

use std::collections::BTreeMap;

/// The endpoint labels of a non-Kubernetes workload: its Mesos labels, keys and values
/// sanitised.
pub fn mesos_labels(labels: &[(String, String)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (sanitize_mesos_label(k), sanitize_mesos_label(v)))
        .collect()
}

/// Makes arbitrary Mesos label text acceptable as a Calico label, as Calico v1.11.3 does:
/// `/` becomes `.`; every run of characters other than `-_.a-zA-Z0-9` becomes `-`; a run of
/// `.`/`-` that holds a `.` becomes a single `.`; leading and trailing `.`/`-` are dropped.
pub fn sanitize_mesos_label(text: &str) -> String {
    let mut replaced = String::with_capacity(text.len());
    let mut in_invalid_run = false;
    for c in text.chars().map(|c| if c == '/' { '.' } else { c }) {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            replaced.push(c);
            in_invalid_run = false;
        } else if !in_invalid_run {
            replaced.push('-');
            in_invalid_run = true;
        }
    }
    let mut collapsed = String::with_capacity(replaced.len());
    let mut run = String::new();
    for c in replaced.chars().chain(std::iter::once('\0')) {
        if c == '.' || c == '-' {
            run.push(c);
            continue;
        }
        if run.contains('.') {
            collapsed.push('.');
        } else {
            collapsed.push_str(&run);
        }
        run.clear();
        if c != '\0' {
            collapsed.push(c);
        }
    }
    collapsed.trim_matches(|c| c == '.' || c == '-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_labels_are_sanitised() {
        let cases = [
            ("app", "app"),
            ("org.apache/mesos", "org.apache.mesos"),
            ("a b  c", "a-b-c"),
            ("héllo wörld", "h-llo-w-rld"),
            ("key-.-value", "key.value"),
            ("a--b", "a--b"),
            ("a-/-b", "a.b"),
            ("..leading", "leading"),
            ("trailing--", "trailing"),
            ("-.x.-", "x"),
            ("under_score", "under_score"),
            ("✓", ""),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_mesos_label(input), want, "{input:?}");
        }
    }
}
