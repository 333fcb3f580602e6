//! The shape of the code: dependencies between the top-level modules of `src/` point one way,
//! down the layers below, and no import cycle crosses two of them.
//!
//! `cargo test architecture -- --nocapture` prints the module graph. It reads the sources as
//! text: every `crate::<module>` path (in `use` lines, braces included, and in code) of a
//! file under `src/<module>` or `src/<module>.rs` is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, top first. A module may use modules of its own layer only where the edge is
/// listed in [`SAME_LAYER`], and any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["cli", "seed"],
    &["app", "workers"],
    &["graphql"],
    &[
        "battles",
        "meals",
        "pokemon",
        "specs",
        "credentials",
        "usage",
        "storage",
        "users",
    ],
    &["pagination", "viewer"],
    &["state"],
    &["consistency"],
    &["crypto"],
    &["error", "telemetry"],
    &["backends", "config"],
    &["metrics"],
];

/// Edges allowed inside one layer (domains using a lower domain, seeding through a command).
const SAME_LAYER: &[(&str, &str)] = &[
    ("cli", "seed"),
    ("app", "workers"),
    ("battles", "meals"),
    ("battles", "users"),
    ("specs", "users"),
    ("credentials", "users"),
    ("usage", "users"),
    ("storage", "users"),
    ("pokemon", "meals"),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `module -> modules it uses`, read from `src/`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("below src/");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a file name")
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            let used = graph.entry(top.clone()).or_default();
            for target in crate_paths(&text) {
                if target != top {
                    used.insert(target);
                }
            }
        }
    }
    graph
}

/// The first segment of every `crate::…` path in `text`, comments left out.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: every first segment in the braces (on this line).
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Every cycle's modules (strongly connected components of more than one module).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for m in graph.keys() {
        let from_m = reaches(m);
        let scc: BTreeSet<String> = from_m
            .iter()
            .filter(|other| *other != m && reaches(other).contains(m))
            .cloned()
            .chain([m.clone()])
            .collect();
        if scc.len() > 1 && !out.contains(&scc) {
            out.push(scc);
        }
    }
    out
}

#[test]
fn no_import_cycle_crosses_two_top_level_modules() {
    let graph = module_graph();
    for (m, used) in &graph {
        let used: Vec<&str> = used.iter().map(String::as_str).collect();
        println!("{m} -> {}", used.join(", "));
    }
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn dependencies_point_down_the_layers() {
    let graph = module_graph();
    let mut wrong = Vec::new();
    for (m, used) in &graph {
        let Some(from) = layer_of(m) else {
            wrong.push(format!("{m} is in no layer: add it to LAYERS"));
            continue;
        };
        for target in used {
            let Some(to) = layer_of(target) else {
                wrong.push(format!("{m} -> {target}: {target} is in no layer"));
                continue;
            };
            let allowed = to > from || SAME_LAYER.contains(&(m.as_str(), target.as_str()));
            if !allowed {
                wrong.push(format!("{m} -> {target}"));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies pointing up: {wrong:#?}");
}

/// Every `.rs` file below `src/`, with its text.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                out.push((path, text));
            }
        }
    }
    out
}

/// A list that forgets to read its collection version first is never wrong (its statements
/// then make the response unmemoizable), but it gains nothing from the cache: every
/// function that runs a page (`keyset_page`) reads the versions of its tables first.
#[test]
fn every_paged_list_reads_its_collection_version_first() {
    let mut unversioned = Vec::new();
    for (path, text) in sources() {
        if path.ends_with("pagination.rs") {
            continue;
        }
        // Each function, from one `fn ` to the next.
        for body in text.split("\npub async fn ").skip(1) {
            let body = body.split("\nasync fn ").next().unwrap_or(body);
            let Some(page) = body.find("keyset_page(") else {
                continue;
            };
            let reads_first = body
                .find("consistency::reading(")
                .is_some_and(|read| read < page);
            if !reads_first {
                let name = body.split('(').next().unwrap_or("?");
                unversioned.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        unversioned.is_empty(),
        "lists that run a page without reading their collection version first: {unversioned:#?}"
    );
}
