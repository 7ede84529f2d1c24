//! The crate's modules form no import cycle: every `crate::a::b` and `super::b` path in `src/`
//! (outside test modules and comments) is an edge from the file's module to the module it names; a module
//! and its own submodules do not count. Fails naming the cycle when one appears.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Test modules may use anything; comments and doc links are not dependencies.
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap()
                .to_owned();
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts.join("::"), code);
        }
    }
    out
}

/// The module a `crate::...` path lands in: the longest module name it starts with.
fn resolve<'a>(path: &str, names: &'a [String]) -> Option<&'a String> {
    names
        .iter()
        .filter(|n| !n.is_empty() && (path == n.as_str() || path.starts_with(&format!("{n}::"))))
        .max_by_key(|n| n.len())
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

#[test]
fn modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let names: Vec<String> = mods.keys().cloned().collect();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, code) in &mods {
        // `super::x` in `a::b` names `a::x`; in `a` (a mod.rs), the crate's `x`.
        let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
        for (prefix, base) in [("crate::", ""), ("super::", parent)] {
            let mut rest = code.as_str();
            while let Some(at) = rest.find(prefix) {
                // `crate::` inside a longer word (`some_crate::`) is not the crate.
                let word_start =
                    at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
                rest = &rest[at + prefix.len()..];
                if !word_start {
                    continue;
                }
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let path = path.trim_end_matches(':');
                let full = if base.is_empty() {
                    path.to_owned()
                } else {
                    format!("{base}::{path}")
                };
                if let Some(target) = resolve(&full, &names) {
                    if !related(module, target) {
                        edges
                            .entry(module.as_str())
                            .or_default()
                            .insert(target.as_str());
                    }
                }
            }
        }
    }
    // A cycle is a path back to where a depth-first walk started.
    fn walk<'a>(
        at: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|m| *m == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at);
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at);
        for next in edges.get(at).into_iter().flatten() {
            if let Some(cycle) = walk(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at);
        None
    }
    let mut done = BTreeSet::new();
    for module in mods.keys() {
        if let Some(cycle) = walk(module, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle between modules: {}", cycle.join(" -> "));
        }
    }
    // The same between the crate's top-level modules and folders: `release -> bundle` and
    // `bundle::layout -> release` is a cycle between two folders even though no single
    // module imports itself back.
    fn top(m: &str) -> &str {
        m.split("::").next().unwrap_or(m)
    }
    let mut folders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, targets) in &edges {
        for to in targets {
            if top(from) != top(to) {
                folders.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    let mut done = BTreeSet::new();
    for folder in folders.keys() {
        if let Some(cycle) = walk(folder, &folders, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle between top-level modules: {}",
                cycle.join(" -> ")
            );
        }
    }
    assert!(edges.len() > 10, "the module graph looks empty: {edges:?}");
}
