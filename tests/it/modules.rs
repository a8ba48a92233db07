//! The module graph of `src/`: imports point one way, no module reaches back.
//!
//! Reads every file under `src/`, takes each `crate::name` it refers to (in
//! `use` lines, grouped `use crate::{a, b}` and inline paths alike) as an edge
//! from the file's top-level module (`src/auth/cache.rs` belongs to `auth`)
//! to `name`, and fails on any cycle, naming the files that make it. Test
//! code may reach anywhere: a file's `#[cfg(test)]` tail and `tests.rs`
//! files are left out, as are comments. `main.rs` and `lib.rs` only
//! declare or call modules and are skipped. Run it alone with
//! `cargo test --locked --test it modules::`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// module → (module it uses → the first file:line that does).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Edges known to close a cycle, each with the change that removes it. Keep
/// this empty: an entry is a debt, not a permission.
const KNOWN: &[(&str, &str, &str)] = &[];

#[test]
fn no_import_cycle_among_src_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = graph(&src);
    assert!(graph.len() > 5, "too few modules found under {src:?}");
    for (from, to, _until) in KNOWN {
        if let Some(edges) = graph.get_mut(*from) {
            edges.remove(*to);
        }
    }
    let cycles = cycles(&graph);
    let report: Vec<String> = cycles
        .iter()
        .map(|cycle| {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("  {} → {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            format!("{}\n{}", cycle.join(" → "), steps.join("\n"))
        })
        .collect();
    assert!(
        report.is_empty(),
        "import cycles among src/ modules (imports must point one way, \
         server → proxy → access → auth → store):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_names_its_edges() {
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned(), "x.rs:1".to_owned());
    }
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
    graph.get_mut("c").unwrap().remove("a");
    assert!(cycles(&graph).is_empty());
}

#[test]
fn references_are_read_from_use_lines_groups_and_paths_but_not_comments_or_tests() {
    let text = "\
use crate::auth::token;
use crate::{audit, store::Store};
// use crate::server;
fn f() { crate::clock::unix_now(); }
#[cfg(test)]
mod tests { use crate::proxy; }
";
    let found: Vec<String> = references(text).into_iter().map(|(m, _)| m).collect();
    assert_eq!(found, ["auth", "audit", "store", "clock"]);
}

fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let stem = file.file_stem().unwrap().to_string_lossy();
        if top == "main" || top == "lib" || stem == "tests" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (used, line) in references(&text) {
            if used != top && used != "self" && used != "super" {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(used)
                    .or_insert_with(|| format!("src/{}:{line}", rel.display()));
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Each top-level module named after `crate::`, with its 1-based line, in
/// order of appearance, up to the file's `#[cfg(test)]` tail.
fn references(text: &str) -> Vec<(String, usize)> {
    let mut code = String::new();
    let mut line_of = Vec::new(); // byte offset in `code` → line number
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        line_of.push((code.len(), n + 1));
        code.push_str(line);
        code.push('\n');
    }
    let line_at = |offset: usize| {
        line_of
            .iter()
            .rev()
            .find(|(start, _)| *start <= offset)
            .map_or(0, |(_, n)| *n)
    };
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let offset = code.len() - rest.len() + at;
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::C, c::{d, e}}`: the names at depth one.
            let mut depth = 1;
            let mut name = String::new();
            let mut expecting_name = true;
            for c in group.chars() {
                let ident = c.is_alphanumeric() || c == '_';
                if ident && depth == 1 && expecting_name {
                    name.push(c);
                    continue;
                }
                if !name.is_empty() {
                    found.push((std::mem::take(&mut name), line_at(offset)));
                    expecting_name = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expecting_name = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
            if !name.is_empty() {
                found.push((name, line_at(offset)));
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((name, line_at(offset)));
            }
        }
        rest = after;
    }
    found
}

/// Every elementary cycle found by a depth-first search from each module,
/// each reported once, starting at its smallest module name.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn walk(
        graph: &Graph,
        start: &str,
        node: &str,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                found.insert(cycle);
            } else if next.as_str() > start && !path.contains(next) {
                path.push(next.clone());
                walk(graph, start, next, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        walk(graph, start, start, &mut vec![start.clone()], &mut found);
    }
    found.into_iter().collect()
}
