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

/// The crate modules a file names: in `crate::...` paths, in `super::...` paths (resolved from the file's
/// module `me`), and through associated functions of `impl Store` blocks called as `Store::f(` (`methods`:
/// which module defines each), test modules excluded.
fn imports(
    text: &str,
    me: &str,
    modules: &BTreeSet<String>,
    methods: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut resolve = |segments: Vec<String>| {
        // The longest prefix of the path that is a module.
        for n in (1..=segments.len()).rev() {
            let m = segments[..n].join("::");
            if modules.contains(&m) {
                found.insert(m);
                break;
            }
        }
    };
    let path_after = |at: usize| -> String {
        code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let path = path_after(i + 7);
        resolve(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    // `super::x` from module `a::b::c` (a file) is `a::b::x`; a `mod.rs` module's parent the same way.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut base: Vec<String> = me.split("::").map(String::from).collect();
        let mut rest = &code[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        base.extend(path.split("::").filter(|s| !s.is_empty()).map(String::from));
        resolve(base);
    }
    // `Store::f(` calls the `impl Store` block that defines `f`.
    for (i, _) in code.match_indices("Store::") {
        let name = path_after(i + 7);
        if let Some(m) = methods.get(name.split("::").next().unwrap_or("")) {
            found.insert(m.clone());
        }
    }
    found
}

/// The associated functions each module's `impl Store` blocks define, by name.
fn store_methods(files: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (module, text) in files {
        let code = text.split("#[cfg(test)]").next().unwrap_or(text);
        let mut depth = 0i32;
        let mut in_impl: Option<i32> = None;
        for line in code.lines() {
            let t = line.trim_start();
            if t.starts_with("impl Store") || t.starts_with("impl<'a> Store") {
                in_impl = Some(depth);
            }
            if let Some(d) = in_impl
                && depth == d + 1
            {
                let f = t
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ");
                if let Some(rest) = f.strip_prefix("fn ") {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name, module.clone());
                }
            }
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            if in_impl.is_some_and(|d| depth <= d) {
                in_impl = None;
            }
        }
    }
    out
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
    let texts: Vec<(String, String)> = lib
        .iter()
        .map(|f| (module_of(&src, f), std::fs::read_to_string(f).unwrap()))
        .collect();
    let methods = store_methods(&texts);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (me, text) in &texts {
        let me = me.clone();
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
        let deps = imports(text, &me, &modules, &methods);
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

#[test]
fn sql_is_written_only_in_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(src.join("store"))) {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
        for (n, line) in code.lines().enumerate() {
            let t = line.trim_start();
            // Comments, and the examples `runner sql --help` shows, are prose.
            if t.starts_with("//") || line.contains("runner sql") {
                continue;
            }
            for word in [
                "SELECT ",
                "INSERT INTO",
                "DELETE FROM",
                "CREATE TABLE",
                "PRAGMA ",
            ] {
                if line.contains(word) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, t));
                }
            }
            if line.contains("UPDATE ") && line.contains(" SET ") {
                found.push(format!("{}:{}: {}", f.display(), n + 1, t));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside src/store (give the store a typed function instead):\n{}",
        found.join("\n")
    );
}
