//! The architecture, checked from the sources: the library's layers import only downwards, the modules
//! form no import circle, the library has no command-line, progress-bar or signal code, and every folder
//! and file starts with a module doc.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up; a module may import its own layer and those below it.
const LAYERS: &[&[&str]] = &[
    &["error", "text", "files"],
    &["core"],
    &["store"],
    &["sweep"],
    &["report"],
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/core/data/idx.rs` -> `core::data::idx`; `src/core/mod.rs` -> `core`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The crate modules a file names in `use crate::...` and `crate::...` paths (test modules excluded).
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let path: String = code[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        // The longest prefix of the path that is a module.
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        for n in (1..=segments.len()).rev() {
            let m = segments[..n].join("::");
            if modules.contains(&m) {
                found.insert(m);
                break;
            }
        }
    }
    found
}

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module {module} is in no layer"))
}

#[test]
fn layers_import_downwards_only_and_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let lib: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            !f.starts_with(src.join("cli")) && !f.ends_with("main.rs") && !f.ends_with("lib.rs")
        })
        .collect();
    let modules: BTreeSet<String> = lib.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &lib {
        let text = std::fs::read_to_string(f).unwrap();
        let me = module_of(&src, f);
        assert!(
            text.trim_start().starts_with("//!"),
            "{me} has no module doc saying what it owns"
        );
        for banned in ["clap", "indicatif", "signal_hook"] {
            assert!(
                !text.contains(&format!("{banned}::")),
                "the library module {me} uses {banned}: that belongs to the binary"
            );
        }
        let deps = imports(&text, &modules);
        for d in &deps {
            assert!(
                layer(d) <= layer(&me),
                "{me} imports {d}, a module of a higher layer"
            );
        }
        // A module's own submodules and its parent are not edges of the graph.
        let deps = deps
            .into_iter()
            .filter(|d| {
                d != &me && !d.starts_with(&format!("{me}::")) && !me.starts_with(&format!("{d}::"))
            })
            .collect();
        graph.insert(me, deps);
    }
    // Depth-first search for a circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => panic!("import circle: {} -> {m}", path.join(" -> ")),
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, state, path);
        }
        path.pop();
        state.insert(m.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        visit(m, &graph, &mut state, &mut Vec::new());
    }
    assert!(graph.len() > 30, "found only {} modules", graph.len());
}
