//! ARCHITECTURE.md's rule that the top-level modules of `src/` form a tree (a DAG): no module
//! reaches back, through `crate::…` paths, to a module that depends on it. Read from the
//! source text, outside `#[cfg(test)]` code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module named after `crate::` in `text` (plain paths and `use crate::{…}`).
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each item at depth 1 of the braces.
            let mut depth = 1;
            let mut item_start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && item_start {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                        continue;
                    } else if !name.is_empty() {
                        found.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found.remove("self");
    found
}

fn collect(dir: &Path, top: Option<&str>, edges: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            collect(&path, Some(top.unwrap_or(&name)), edges);
            continue;
        }
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        let module = top.unwrap_or(stem).to_owned();
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let targets = edges.entry(module.clone()).or_default();
        for referenced in referenced_modules(code) {
            if referenced != module {
                targets.insert(referenced);
            }
        }
    }
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    start: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in edges.get(path.last()?.as_str()).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_owned());
            return Some(cycle);
        }
        if path.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(cycle) = cycle_from(start, edges, path) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

#[test]
fn top_level_modules_form_a_tree() {
    let mut edges = BTreeMap::new();
    collect(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        None,
        &mut edges,
    );
    assert!(edges.len() > 10, "the scan found the modules: {edges:?}");
    assert!(
        edges["proxy"].contains("access"),
        "the scan sees `crate::` paths: {edges:?}"
    );
    for module in edges.keys() {
        let cycle = cycle_from(module, &edges, &mut vec![module.clone()]);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_scan_reads_grouped_imports() {
    let found = referenced_modules(
        "use crate::{api_error::ApiError, domain::{a, b}, self};\nlet x = crate::store::Store::new();",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["api_error", "domain", "store"]
    );
}
