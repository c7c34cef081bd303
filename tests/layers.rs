//! The crate's top-level modules depend on each other in one direction only: no import circle.
//!
//! A plain text scan of `src/**/*.rs`: every `crate::<module>` (also inside `use crate::{…}`
//! groups) outside comments and `#[cfg(test)]` code is an edge from the file's top-level module
//! to `<module>`. Test code is left out: it may reach across (a client test reading the metrics
//! page), as long as the code it tests does not. A cycle fails the test and is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// `code` without `//` comments and without the items under `#[cfg(test)]` (an inline
/// `mod … { … }` is skipped to its closing brace; `mod x;` names a test-only file, returned).
fn non_test_code(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_files = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // The item it applies to: up to its end (`;`) or its braces' close.
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                let t = item.trim();
                if let Some(name) = t
                    .strip_prefix("mod ")
                    .or_else(|| t.strip_prefix("pub mod "))
                    .and_then(|r| r.strip_suffix(';'))
                    && !opened
                {
                    test_files.push(name.trim().to_string());
                    break;
                }
                for c in item.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if (opened && depth <= 0) || (!opened && t.ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code_part = line.split_once("//").map_or(line, |(c, _)| c);
        out.push_str(code_part);
        out.push('\n');
    }
    (out, test_files)
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names after `crate::`.
fn references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `gitlab_jobs_exporter_crate::`, not ours
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b, c::{…}}`: the first name of each top-level entry.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            found.insert(name.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name.to_string());
            }
        }
    }
    found
}

fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    // Test-only files (`#[cfg(test)] mod tests;`): first the declarations, from every file
    // (`x/mod.rs` sorts after its children), then the scan.
    let mut sources = BTreeMap::new();
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    for file in &files {
        let code = std::fs::read_to_string(file).expect("source readable");
        let (code, test_files) = non_test_code(&code);
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().expect("in src").to_path_buf(),
            _ => file.with_extension(""),
        };
        for name in test_files {
            test_only.insert(dir.join(format!("{name}.rs")));
            test_only.insert(dir.join(name));
        }
        sources.insert(file.clone(), code);
    }
    let mut graph = Graph::new();
    for (file, code) in &sources {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        graph.entry(module.clone()).or_default();
        if test_only.iter().any(|t| file.starts_with(t)) {
            continue;
        }
        for target in references(code) {
            if target != module && !matches!(target.as_str(), "self" | "super") {
                graph.get_mut(&module).expect("inserted").insert(target);
            }
        }
    }
    graph
}

/// A cycle of `graph`, if it has one (depth-first search, white/grey/black).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn edges(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            format!(
                "  {m} -> {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    assert!(
        graph.contains_key("gitlab") && graph.contains_key("metrics"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle: {}\nmodule graph:\n{}",
            cycle.join(" -> "),
            edges(&graph)
        );
    }
}

/// The layers issue 10 asked for: the job model at the bottom; the client and the metrics
/// apart (the client reports through `gitlab::ClientObserver`); labels and tracker on the model.
#[test]
fn the_model_is_at_the_bottom_and_client_and_metrics_stay_apart() {
    let graph = module_graph();
    let deps = |m: &str| graph.get(m).cloned().unwrap_or_default();
    assert!(deps("model").is_empty(), "model -> {:?}", deps("model"));
    // The classifier is pure and sits right above the model: nothing of the crate.
    assert!(
        deps("failures").is_empty(),
        "failures -> {:?}",
        deps("failures")
    );
    for (from, not) in [
        ("gitlab", "metrics"),
        ("metrics", "gitlab"),
        ("labels", "gitlab"),
        ("tracker", "gitlab"),
        ("config", "gitlab"),
    ] {
        assert!(
            !deps(from).contains(not),
            "{from} -> {not}\nmodule graph:\n{}",
            edges(&graph)
        );
    }
}

/// The scan itself: the forms it must see, and what it must not count.
#[test]
fn the_scan_finds_references_and_skips_comments_and_tests() {
    let code = "use crate::a::X;\nuse crate::{b::Y, c, d::{e, f}};\n\
        // crate::commented\nlet x = crate::g::h(); // crate::trailing\n\
        #[cfg(test)]\nmod tests {\n    use crate::t;\n    fn f() { crate::u(); }\n}\n\
        #[cfg(test)]\nmod file_tests;\nuse gitlab_jobs_exporter_crate::no;\n";
    let (kept, test_files) = non_test_code(code);
    assert_eq!(
        references(&kept).into_iter().collect::<Vec<_>>(),
        ["a", "b", "c", "d", "g"]
    );
    assert_eq!(test_files, ["file_tests"]);
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["c".into()].into());
    graph.insert("c".into(), ["a".into()].into());
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}
