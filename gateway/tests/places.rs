//! The gateway's three places, kept apart (ARCHITECTURE.md): the HTTP edge (`http/`) may use
//! the core and the sites; the core (`core/`) may use the sites but knows nothing of the edge
//! or of HTTP; the sites (`sites/`) know neither; configuration (`config/`) uses none of them.
//! And no module imports another that imports it back, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each module of the crate (`core::retrieve::cache`) and its code without unit tests and
/// comments.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut modules = BTreeMap::new();
    for path in files {
        let relative = path.strip_prefix(&root).expect("under src").with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String =
            code.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        modules.insert(parts.join("::"), code);
    }
    modules
}

/// The modules `code` names by `crate::` path (the longest module prefix of each path).
fn uses(code: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let path: String = code[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        if let Some(module) =
            (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains_key(m))
        {
            found.insert(module);
        }
    }
    found
}

fn place(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn each_place_uses_only_the_places_below_it() {
    let modules = modules();
    assert!(modules.contains_key("core::retrieve::locate") && modules.contains_key("http::server"), "the tree");
    let forbidden: &[(&str, &[&str])] = &[
        ("core", &["http", "state", "startup", "check"]),
        ("sites", &["core", "http", "state", "startup", "check"]),
        ("config", &["core", "http", "sites", "state", "startup", "check"]),
    ];
    let mut wrong = Vec::new();
    for (module, code) in &modules {
        for (from, not) in forbidden {
            if place(module) != *from {
                continue;
            }
            for used in uses(code, &modules) {
                if not.contains(&place(&used)) {
                    wrong.push(format!("{module} uses {used}"));
                }
            }
            if *from != "config" && code.contains("axum") {
                wrong.push(format!("{module} uses axum"));
            }
        }
    }
    assert!(wrong.is_empty(), "arrows against the places: {wrong:#?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = modules();
    // A module's use of its own ancestors (a child using its parent's types) is not an arrow
    // between places.
    let edges: BTreeMap<&str, BTreeSet<String>> = modules
        .iter()
        .map(|(module, code)| {
            let used = uses(code, &modules)
                .into_iter()
                .filter(|u| u != module && !module.starts_with(&format!("{u}::")))
                .collect();
            (module.as_str(), used)
        })
        .collect();
    // A circle exists when a module reaches itself.
    let mut circles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = edges[start].iter().map(String::as_str).collect();
        while let Some(next) = stack.pop() {
            if next == *start {
                circles.push(start.to_string());
                break;
            }
            if seen.insert(next) {
                stack.extend(edges.get(next).into_iter().flatten().map(String::as_str));
            }
        }
    }
    assert!(circles.is_empty(), "modules on an import circle: {circles:?}");
}
