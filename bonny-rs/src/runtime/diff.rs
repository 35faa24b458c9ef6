//! The descendant diff: whether the cluster already holds what a write would send. Pure.

use serde_json::Value;

/// Whether `live` holds every field of `desired` with the same value. Objects may carry more
/// keys (defaults, other managers' fields); lists must have the same length, element by element.
pub(crate) fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, want)| match live.get(key) {
                // `null` asks for the field to be gone.
                None => want.is_null(),
                Some(have) => contains(have, want),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len()
                && live
                    .iter()
                    .zip(desired)
                    .all(|(have, want)| contains(have, want))
        }
        (Value::Number(live), Value::Number(desired)) => live.as_f64() == desired.as_f64(),
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn contains_ignores_extra_live_fields() {
        let live = json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "extra": true});
        assert!(contains(&live, &json!({"b": {"c": "x"}})));
        assert!(contains(&live, &json!({"b": {"d": [1, 2]}})));
    }

    #[test]
    fn contains_detects_changed_and_missing_fields() {
        let live = json!({"a": 1, "b": {"c": "x"}, "l": [{"n": 1}]});
        assert!(!contains(&live, &json!({"a": 2})));
        assert!(!contains(&live, &json!({"b": {"c": "y"}})));
        assert!(!contains(&live, &json!({"missing": 1})));
        assert!(!contains(&live, &json!({"l": [{"n": 1}, {"n": 2}]})));
        assert!(!contains(&live, &json!({"l": []})));
    }

    #[test]
    fn contains_matches_list_elements_as_subsets() {
        let live = json!({"containers": [{"name": "app", "image": "nginx", "terminationMessagePath": "/dev"}]});
        assert!(contains(
            &live,
            &json!({"containers": [{"name": "app", "image": "nginx"}]})
        ));
        assert!(!contains(
            &live,
            &json!({"containers": [{"name": "app", "image": "httpd"}]})
        ));
    }

    #[test]
    fn contains_treats_null_as_absent() {
        assert!(contains(&json!({"a": 1}), &json!({"b": null})));
        assert!(contains(&json!({"a": 1, "b": null}), &json!({"b": null})));
        assert!(!contains(&json!({"a": 1, "b": 2}), &json!({"b": null})));
    }
}
