//! Reading counters out of the API server's Prometheus text exposition.

/// Sum of `apiserver_request_total` samples whose `verb` (any case) and `resource` match,
/// over all other labels.
pub(crate) fn request_count(text: &str, verb: &str, resource: &str) -> u64 {
    let total: f64 = text
        .lines()
        .filter_map(|line| line.strip_prefix("apiserver_request_total{"))
        .filter_map(parse_sample)
        .filter(|(labels, _)| {
            label(labels, "verb").is_some_and(|v| v.eq_ignore_ascii_case(verb))
                && label(labels, "resource").is_some_and(|r| r == resource)
        })
        .map(|(_, value)| value)
        .sum();
    // Counters are integral; the exposition format writes them as floats.
    total.round() as u64
}

/// Splits `k="v",k2="v2"} 12` into its labels and value.
fn parse_sample(rest: &str) -> Option<(Vec<(String, String)>, f64)> {
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
        let (start, c) = chars.next()?;
        if c == '}' {
            let value = rest[start + 1..].split_whitespace().next()?.parse().ok()?;
            return Some((labels, value));
        }
        let mut end = start + c.len_utf8();
        for (i, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            end = i + c.len_utf8();
        }
        let name = rest[start..end].to_owned();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        }
        labels.push((name, value));
    }
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="PATCH",version="v1"} 3
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="GET",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="PATCH",version="v1"} 1e+01
apiserver_request_total_other{resource="configmaps",verb="PATCH"} 100
apiserver_request_total{code="200",resource="odd\"name",verb="PATCH"} 4
"#;

    #[test]
    fn sums_over_other_labels() {
        assert_eq!(request_count(TEXT, "PATCH", "configmaps"), 5);
        assert_eq!(request_count(TEXT, "patch", "configmaps"), 5);
        assert_eq!(request_count(TEXT, "GET", "configmaps"), 7);
        assert_eq!(request_count(TEXT, "PATCH", "leases"), 10);
        assert_eq!(request_count(TEXT, "DELETE", "configmaps"), 0);
    }

    #[test]
    fn unescapes_label_values() {
        assert_eq!(request_count(TEXT, "PATCH", "odd\"name"), 4);
    }
}
