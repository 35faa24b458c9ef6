//! "Did you mean ...?" for misspelled keys and verbs.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Two edits (counting a swap of neighbours as one) catch the usual slips without suggesting
    // `get` for `foo`.
    let limit = 2.min(word.chars().count().saturating_sub(1)).max(1);
    candidates
        .iter()
        .map(|candidate| (distance(word, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// adjacent characters each cost one.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for (i, cell) in table.iter_mut().step_by(width).enumerate() {
        *cell = i;
    }
    for (j, cell) in table.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERBS: &[&str] = &[
        "get", "list", "watch", "create", "update", "patch", "delete", "use",
    ];

    #[test]
    fn swapped_letters_count_once() {
        assert_eq!(distance("lsit", "list"), 1);
        assert_eq!(closest("lsit", VERBS), Some("list"));
        assert_eq!(closest("wacth", VERBS), Some("watch"));
    }

    #[test]
    fn missing_and_extra_letters() {
        assert_eq!(closest("delet", VERBS), Some("delete"));
        assert_eq!(closest("gett", VERBS), Some("get"));
        assert_eq!(closest("Get", VERBS), Some("get"));
    }

    #[test]
    fn nothing_close() {
        assert_eq!(closest("foo", VERBS), None);
        assert_eq!(closest("x", VERBS), None);
        assert_eq!(closest("deployments", VERBS), None);
    }
}
