//! The crate's modules import one way: the author's contract at the bottom, the runtime above
//! it, manifests above that, the operator on top; `leader` and `observe` stand aside.
//! `ARCHITECTURE.md` explains the layers; this test fails on any import against them.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Which top-level modules each top-level module may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("controller", &[]),
    ("observe", &[]),
    ("leader", &[]),
    ("runtime", &["controller", "observe", "leader"]),
    ("webhook", &["observe"]),
    ("manifest", &["controller", "runtime", "leader", "webhook"]),
    (
        "error",
        &[
            "controller",
            "runtime",
            "manifest",
            "leader",
            "observe",
            "webhook",
        ],
    ),
    (
        "operator",
        &[
            "controller",
            "runtime",
            "manifest",
            "leader",
            "observe",
            "error",
            "webhook",
        ],
    ),
];

/// Items re-exported at the crate root, and the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Operator", "operator"),
    ("OperatorBuilder", "operator"),
];

/// Modules outside the layering: the facade and the test harness may use anything.
const FREE: &[&str] = &["lib", "testing"];

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(module, deps)| (*module, deps.iter().copied().collect()))
        .collect();
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        if FREE.contains(&module.as_str()) {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "src/{module} is a new top-level module: give it a layer in tests/layers.rs and ARCHITECTURE.md"
            ));
            continue;
        };
        for (target, places) in imports {
            if target != module && !may.contains(target.as_str()) && graph.contains_key(target) {
                wrong.push(format!(
                    "{module} -> {target} is against the layering (at {})",
                    places.join(", ")
                ));
            }
        }
    }
    for (module, imports) in &graph {
        let targets: Vec<_> = imports.keys().filter(|t| *t != module).collect();
        println!("{module} -> {targets:?}");
    }
    if let Some(cycle) = find_cycle(&graph) {
        wrong.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

#[test]
fn the_operator_is_imported_only_by_the_facade() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    let importers: Vec<_> = graph
        .iter()
        .filter(|(module, imports)| {
            !["lib", "operator", "testing"].contains(&module.as_str())
                && imports.contains_key("operator")
        })
        .map(|(module, _)| module.clone())
        .collect();
    assert!(importers.is_empty(), "operator imported by {importers:?}");
}

#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    let found = crate_paths(
        "use crate::{\n    Error,\n    controller::{Axn, Object},\n    runtime::Registration,\n};\nfn f() { crate::leader::x(); }\n",
    );
    let names: BTreeSet<_> = found.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["error", "controller", "runtime", "leader"])
    );
}

/// Top-level module -> imported top-level module -> `file:line` places.
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn import_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap();
        let module = Path::new(first.as_os_str())
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(&file).unwrap();
        let text = strip_tests(&text);
        let entry = graph.entry(module.clone()).or_default();
        for (target, line) in crate_paths(text) {
            entry
                .entry(target)
                .or_default()
                .push(format!("src/{}:{line}", relative.display()));
        }
        // `super::` in a top-level file names the crate root.
        if relative.components().count() == 1 && module != "lib" {
            for (target, line) in prefixed_paths(text, "super::") {
                entry
                    .entry(target)
                    .or_default()
                    .push(format!("src/{}:{line}", relative.display()));
            }
        }
    }
    graph
}

/// The file up to its `#[cfg(test)]` module: unit tests may reach anywhere.
fn strip_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn crate_paths(text: &str) -> Vec<(String, usize)> {
    prefixed_paths(text, "crate::")
        .into_iter()
        .map(|(name, line)| {
            let module = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name, |(_, module)| (*module).to_owned());
            (module, line)
        })
        .collect()
}

/// The first segment after every `prefix` (`crate::x` or each name in `crate::{x, y::z}`),
/// with its line number; comments are skipped.
fn prefixed_paths(text: &str, prefix: &str) -> Vec<(String, usize)> {
    let code: String = text
        .lines()
        // Plain comments are skipped; doc comments count, since an intra-doc link is a
        // reference to the module it names.
        .map(|line| match line.find("//") {
            Some(at) if !line[at..].starts_with("///") && !line[at..].starts_with("//!") => {
                &line[..at]
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    let mut offset = 0;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = code[..offset + at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let start = offset + at + prefix.len();
        let after = &code[start..];
        if !preceded_by_ident {
            if let Some(group) = after.strip_prefix('{') {
                let mut depth = 0;
                let mut name = String::new();
                let mut at_start = true;
                let mut position = start + 1;
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            if !name.is_empty() {
                                found.push((std::mem::take(&mut name), line_of(&code, position)));
                            }
                            at_start = true;
                        }
                        c if at_start && (c.is_alphanumeric() || c == '_') => name.push(c),
                        _ if at_start && !name.is_empty() => {
                            found.push((std::mem::take(&mut name), line_of(&code, position)));
                            at_start = false;
                        }
                        _ => {}
                    }
                    position += c.len_utf8();
                }
                if !name.is_empty() {
                    found.push((name, line_of(&code, position)));
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((name, line_of(&code, start)));
                }
            }
        }
        offset = start;
        rest = &code[start..];
    }
    found
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].matches('\n').count() + 1
}

fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) || FREE.contains(&node) {
            return None;
        }
        path.push(node.to_owned());
        if let Some(imports) = graph.get(node) {
            for target in imports.keys() {
                if target != node
                    && graph.contains_key(target)
                    && let Some(cycle) = visit(target, graph, path, done)
                {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}
