//! No file-level import cycles inside any crate of the workspace: a module
//! may use another only if that one does not, directly or through others,
//! use it back. This is the check CI runs (it is part of `cargo test`);
//! ARCHITECTURE.md's module graphs are what it keeps true.
//!
//! The graph is read from each crate's sources: every `crate::…`,
//! `super::…` and `self::…` path outside comments and `#[cfg(test)]`
//! modules is an edge from the file's module to the longest module path it
//! names (`use crate::store::{At, KeyedStore}` → `store`;
//! `crate::store::heap::X` → `store::heap`). Items the crate root defines
//! or re-exports count as the root's, and the root's `pub use` lines as its
//! edges, so a module that imports through the root (`crate::Key` instead
//! of `crate::types::Key`) makes a cycle too: modules import from where
//! things are defined. `mod` declarations are not edges.
//!
//! `cargo test -p floe --test module_cycles -- --nocapture` prints the
//! graphs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path ("" for the crate root) → source text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// The source without comments and without `#[cfg(test)]` modules.
fn code_only(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        if let Some(module) = trimmed.strip_prefix("mod ")
            && let Some(open) = module.find('{')
            && !module[..open].contains(';')
        {
            // Skip to the matching brace.
            let body = &module[open..];
            let mut depth = 0usize;
            let mut end = body.len();
            for (j, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &body[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Every path that follows `prefix::` in `code`, with `{…}` groups expanded
/// (only the leading segments matter).
/// Each path is returned with how many inline `mod name { … }` blocks of
/// the file enclose it (a `super::` there starts from the inline module).
fn paths_after(code: &str, prefix: &str) -> Vec<(usize, Vec<String>)> {
    let inline = inline_modules(code);
    let mut out = Vec::new();
    let needle = format!("{prefix}::");
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find(&needle) {
        let start = from + i;
        from = start + needle.len();
        let before = start.checked_sub(1).map(|b| bytes[b] as char);
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let depth = inline.iter().filter(|r| r.contains(&start)).count();
        let mut paths = Vec::new();
        parse_tree(&code[from..], Vec::new(), &mut paths);
        out.extend(paths.into_iter().map(|p| (depth, p)));
    }
    out
}

/// The byte ranges of the inline module blocks (`mod name {` to its
/// closing brace) in `code`.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("mod ") {
        let start = from + i;
        from = start + 4;
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let rest = &code[from..];
        let ident_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[ident_len..].trim_start();
        if ident_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0usize;
        for (j, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(start..open + j);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Parses a use tree (`a::b::{c, d::e}` or a plain path) into paths.
fn parse_tree(s: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = base;
    let mut pos = 0;
    loop {
        let rest = &s[pos..];
        let skip = rest.len() - rest.trim_start().len();
        pos += skip;
        let rest = &s[pos..];
        if let Some(group) = rest.strip_prefix('{') {
            pos += 1;
            let mut inner = group;
            loop {
                let used = parse_tree(inner, path.clone(), out);
                pos += used;
                inner = &s[pos..];
                let t = inner.trim_start();
                pos += inner.len() - t.len();
                if let Some(t2) = t.strip_prefix(',') {
                    pos += 1;
                    inner = t2;
                    if inner.trim_start().starts_with('}') {
                        let t3 = inner.trim_start();
                        pos += inner.len() - t3.len() + 1;
                        return pos;
                    }
                    continue;
                }
                if t.starts_with('}') {
                    pos += 1;
                }
                return pos;
            }
        }
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            out.push(path);
            return pos;
        }
        pos += ident.len();
        path.push(ident);
        if s[pos..].starts_with("::") && !s[pos + 2..].starts_with('<') {
            pos += 2;
            continue;
        }
        out.push(path);
        return pos;
    }
}

/// The module a path names: its longest known module prefix (the root,
/// "", for the root's own items).
fn resolve(path: &[String], known: &BTreeSet<String>) -> String {
    let mut best = String::new();
    for n in 1..=path.len() {
        let candidate = path[..n].join("::");
        if known.contains(&candidate) {
            best = candidate;
        }
    }
    best
}

fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &modules {
        let code = code_only(text);
        let own: Vec<String> = module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let mut targets = BTreeSet::new();
        for (_, path) in paths_after(&code, "crate") {
            targets.insert(resolve(&path, &known));
        }
        for (inline_depth, path) in paths_after(&code, "super") {
            // The first `super`s climb out of inline modules, still inside
            // this file's module; the rest climb the file modules.
            let mut rest = path.as_slice();
            let mut climbs = 1;
            while let Some((first, tail)) = rest.split_first()
                && first == "super"
            {
                climbs += 1;
                rest = tail;
            }
            let mut base = own.clone();
            for _ in inline_depth..climbs {
                base.pop();
            }
            let full: Vec<String> = base.into_iter().chain(rest.iter().cloned()).collect();
            targets.insert(resolve(&full, &known));
        }
        for (_, path) in paths_after(&code, "self") {
            let full: Vec<String> = own.iter().cloned().chain(path).collect();
            targets.insert(resolve(&full, &known));
        }
        if module.is_empty() {
            // The root's re-exports: `pub use name::…` without `crate::`.
            for line in code.lines() {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("pub use ") {
                    let first: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if known.contains(&first) {
                        targets.insert(first);
                    }
                }
            }
        }
        targets.remove(module);
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().expect("on stack");
                s.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(module: &str) -> &str {
    if module.is_empty() {
        "(crate root)"
    } else {
        module
    }
}

/// Every crate directory of the workspace (`crates/*` with a `src/`).
fn workspace_crates() -> Vec<PathBuf> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_path_buf();
    let mut out: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("read crates/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    out.sort();
    out
}

#[test]
fn no_crate_has_module_cycles() {
    let crates = workspace_crates();
    assert!(crates.len() >= 10, "found only {crates:?}");
    let mut failures = Vec::new();
    for krate in crates {
        let crate_name = krate.file_name().unwrap().to_string_lossy().into_owned();
        let edges = graph(&krate.join("src"));
        println!("== {crate_name}");
        for (module, deps) in &edges {
            let deps: Vec<&str> = deps.iter().map(|d| name(d)).collect();
            println!("{} -> {}", name(module), deps.join(", "));
        }
        let found = cycles(&edges);
        if !found.is_empty() {
            failures.push(format!("{crate_name}: {found:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "modules that import each other (directly or in a ring):\n{}",
        failures.join("\n")
    );
}

/// The checker itself finds what it must: a ring through a `use` group,
/// a `super::` path, and an import through the crate root.
#[test]
fn the_checker_sees_rings() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("store")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "mod a;\nmod store;\npub use a::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::{store::heap::{H, I}, store};\n// use crate::b; (a comment)\npub struct Thing;\n",
    )
    .unwrap();
    std::fs::write(src.join("store.rs"), "mod heap;\n").unwrap();
    std::fs::write(
        src.join("store/heap.rs"),
        "pub struct H;\nfn f() -> super::super::a::Thing { todo!() }\n#[cfg(test)]\nmod tests { use crate::store::X; }\n",
    )
    .unwrap();
    let edges = graph(src);
    assert_eq!(
        edges["a"],
        BTreeSet::from(["store".to_string(), "store::heap".to_string()]),
        "{edges:?}"
    );
    assert_eq!(edges["store::heap"], BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycles(&edges),
        vec![vec!["a".to_string(), "store::heap".to_string()]]
    );
    // Through the root: `crate::Thing` is the root's, which re-exports `a`.
    std::fs::write(
        src.join("store/heap.rs"),
        "pub struct H;\nfn f() -> crate::Thing { todo!() }\n",
    )
    .unwrap();
    let edges = graph(src);
    assert_eq!(cycles(&edges).len(), 1, "{edges:?}");
    // And none once the ring is broken.
    std::fs::write(src.join("store/heap.rs"), "pub struct H;\n").unwrap();
    assert!(cycles(&graph(src)).is_empty());
    // A `super` inside an inline module names the file's own module; one
    // more climbs to the parent.
    std::fs::write(
        src.join("store/heap.rs"),
        "pub mod options {\n    use super::*;\n}\n",
    )
    .unwrap();
    assert!(graph(src)["store::heap"].is_empty());
    std::fs::write(
        src.join("store/heap.rs"),
        "pub mod options {\n    use super::super::Y;\n}\n",
    )
    .unwrap();
    assert_eq!(
        graph(src)["store::heap"],
        BTreeSet::from(["store".to_string()])
    );
}
