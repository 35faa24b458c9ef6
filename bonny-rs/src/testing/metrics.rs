//! The API server's request counter, `apiserver_request_total`, read out of its Prometheus
//! text exposition. The one parser of it: tests and the benchmark use [`RequestCounts`].

use std::collections::BTreeMap;

/// The metric's name.
const METRIC: &str = "apiserver_request_total";

/// One sample of `apiserver_request_total`: a count for one combination of labels. A label
/// the API server did not write is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSample {
    /// As the API server reports it: `GET`, `LIST`, `WATCH`, `POST` (create), `PUT`
    /// (replace), `PATCH`, `APPLY` (server-side apply), `DELETE`, `DELETECOLLECTION`.
    pub verb: String,
    /// API group; empty for the core group.
    pub group: String,
    /// Plural resource (`configmaps`); empty for non-resource URLs (`/metrics`, discovery).
    pub resource: String,
    /// Subresource (`status`); empty for the resource itself.
    pub subresource: String,
    /// HTTP status code, as text (`"200"`, `"409"`).
    pub code: String,
    /// How many requests.
    pub count: u64,
}

impl RequestSample {
    /// Whether the verb can change state (anything but `GET`, `LIST` and `WATCH`).
    pub fn is_write(&self) -> bool {
        !["GET", "LIST", "WATCH"]
            .iter()
            .any(|read| self.verb.eq_ignore_ascii_case(read))
    }
}

/// Every sample of `apiserver_request_total` in one scrape of the API server's `/metrics`.
///
/// From [`TestEnv::request_counts`](super::TestEnv::request_counts) or
/// [`RequestCounts::parse`]. Counts restart from zero when the API server restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    samples: Vec<RequestSample>,
}

impl RequestCounts {
    /// Parses Prometheus text; lines of other metrics, comments and malformed samples are
    /// skipped.
    pub fn parse(text: &str) -> RequestCounts {
        let samples = text
            .lines()
            .filter_map(|line| line.strip_prefix(METRIC)?.strip_prefix('{'))
            .filter_map(parse_sample)
            .map(|(labels, value)| {
                let label = |name: &str| {
                    labels
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                RequestSample {
                    verb: label("verb"),
                    group: label("group"),
                    resource: label("resource"),
                    subresource: label("subresource"),
                    code: label("code"),
                    // Counters are integral; the exposition format writes them as floats.
                    count: value.round() as u64,
                }
            })
            .collect();
        RequestCounts { samples }
    }

    /// The samples, in the order of the text.
    pub fn samples(&self) -> &[RequestSample] {
        &self.samples
    }

    /// Requests with this `verb` (any case) to this plural `resource`, summed over all other
    /// labels (codes, groups, subresources).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.sum(|s| s.verb.eq_ignore_ascii_case(verb) && s.resource == resource)
    }

    /// Write requests (see [`RequestSample::is_write`]) to any of `resources`.
    pub fn writes_to(&self, resources: &[&str]) -> u64 {
        self.sum(|s| s.is_write() && resources.contains(&s.resource.as_str()))
    }

    /// Sum of the samples that `filter` accepts.
    pub fn sum(&self, filter: impl Fn(&RequestSample) -> bool) -> u64 {
        self.samples
            .iter()
            .filter(|s| filter(s))
            .map(|s| s.count)
            .sum()
    }

    /// Counts summed by `(verb, resource)`.
    pub fn by_verb_resource(&self) -> BTreeMap<(String, String), u64> {
        let mut totals = BTreeMap::new();
        for sample in &self.samples {
            *totals
                .entry((sample.verb.clone(), sample.resource.clone()))
                .or_insert(0) += sample.count;
        }
        totals
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="PATCH",version="v1"} 3
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="GET",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="PATCH",version="v1"} 1e+01
apiserver_request_total{code="200",component="apiserver",dry_run="",group="example.com",resource="widgets",scope="namespace",subresource="status",verb="PATCH",version="v1"} 4
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="",verb="GET",version=""} 9
apiserver_request_total_other{resource="configmaps",verb="PATCH"} 100
apiserver_request_total{code="200",resource="odd\"name",verb="PATCH"} 4
apiserver_request_total{code="200",resource="broken",verb="PATCH"
"#;

    #[test]
    fn sums_over_other_labels() {
        let counts = RequestCounts::parse(TEXT);
        assert_eq!(counts.samples().len(), 7);
        assert_eq!(counts.count("PATCH", "configmaps"), 5);
        assert_eq!(counts.count("patch", "configmaps"), 5);
        assert_eq!(counts.count("GET", "configmaps"), 7);
        assert_eq!(counts.count("PATCH", "leases"), 10);
        assert_eq!(counts.count("DELETE", "configmaps"), 0);
        assert_eq!(counts.count("GET", ""), 9);
    }

    #[test]
    fn reads_every_label_it_names() {
        let counts = RequestCounts::parse(TEXT);
        let status = &counts.samples()[4];
        assert_eq!(
            (
                status.verb.as_str(),
                status.group.as_str(),
                status.resource.as_str(),
                status.subresource.as_str(),
                status.code.as_str(),
                status.count
            ),
            ("PATCH", "example.com", "widgets", "status", "200", 4)
        );
        assert_eq!(counts.sum(|s| s.code == "409"), 2);
    }

    #[test]
    fn writes_and_groups() {
        let counts = RequestCounts::parse(TEXT);
        assert_eq!(counts.writes_to(&["configmaps", "widgets"]), 9);
        assert_eq!(counts.writes_to(&["leases"]), 10);
        let totals = counts.by_verb_resource();
        assert_eq!(totals[&("PATCH".to_owned(), "configmaps".to_owned())], 5);
        assert_eq!(totals[&("GET".to_owned(), String::new())], 9);
    }

    #[test]
    fn unescapes_label_values() {
        assert_eq!(RequestCounts::parse(TEXT).count("PATCH", "odd\"name"), 4);
    }
}
