//! The layers of `src/` (README, "Layout"), as a test: each lower module imports only the
//! modules below it, so that the mapping compiler can be read without the domain, the domain
//! without HTTP, and no two top-level modules import each other (but `http` and `state`, the
//! router and what its handlers share). A regression guard, read from the source text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What `sync` may import; `worker` may import `sync` and the same.
const BELOW_SYNC: &[&str] = &[
    "compiler",
    "repo",
    "vocabulary",
    "sqlstate",
    "meter",
    "supabase",
];

/// What each lower module may import of the crate. The composition roots (`cli`, `startup`,
/// `dev`, `doctor`), the HTTP edge (`http`, `state`, `error`, `openapi`) and `config`, which
/// parses into the types of the modules that use them, are held only by the cycle check.
/// Nothing below the composition roots imports `config`: each setting's type lives with its
/// user (`db::PoolSettings`, `auth::Credentials`, `telemetry::LogFormat`, ...).
fn may_import() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("vocabulary", vec![]),
        ("sqlstate", vec![]),
        ("supabase", vec![]),
        ("throwaway", vec![]),
        ("compiler", vec!["vocabulary", "sqlstate"]),
        ("repo", vec!["compiler", "vocabulary", "sqlstate"]),
        ("meter", vec!["vocabulary"]),
        ("sync", BELOW_SYNC.to_vec()),
        ("worker", [&["sync"], BELOW_SYNC].concat()),
        ("auth", vec![]),
        ("db", vec![]),
        ("telemetry", vec![]),
    ]
}

/// The one pair of top-level modules allowed to import each other.
const MUTUAL: (&str, &str) = ("http", "state");

/// The top-level modules of `src/` and, for each, the other top-level modules its files name as
/// `crate::<module>` (in paths and in grouped `use crate::{...}` imports).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut named = BTreeSet::new();
        for text in sources(&src, module) {
            for name in crate_paths(&text) {
                if modules.contains(&name) && &name != module {
                    named.insert(name);
                }
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

/// The text of every file of a top-level module (`src/<m>.rs` or `src/<m>/**.rs`).
fn sources(src: &Path, module: &str) -> Vec<String> {
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return vec![std::fs::read_to_string(file).unwrap()];
    }
    let mut texts = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                texts.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    texts
}

/// The first segment after each `crate::`, and each item of a `crate::{...}` group.
fn crate_paths(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push(ident(&item));
        } else {
            names.push(ident(rest));
        }
    }
    names
}

#[test]
fn each_lower_module_imports_only_the_modules_below_it() {
    let graph = imports();
    let mut wrong = Vec::new();
    for (module, allowed) in may_import() {
        for name in &graph[module] {
            if !allowed.contains(&name.as_str()) {
                wrong.push(format!("{module} imports {name}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_two_top_level_modules_import_each_other_but_http_and_state() {
    let graph = imports();
    let mut cycles = Vec::new();
    for (a, named) in &graph {
        for b in named {
            if a < b && graph[b].contains(a) && (a.as_str(), b.as_str()) != MUTUAL {
                cycles.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(cycles.is_empty(), "{cycles:#?}");
}

/// The modules that compose the rest: the only ones that read settings as flags.
const COMPOSITION_ROOTS: &[&str] = &["cli", "startup", "dev", "doctor"];

#[test]
fn only_the_composition_roots_import_config() {
    let graph = imports();
    let readers: Vec<&String> = graph
        .iter()
        .filter(|(module, named)| {
            named.contains("config") && !COMPOSITION_ROOTS.contains(&module.as_str())
        })
        .map(|(module, _)| module)
        .collect();
    assert!(readers.is_empty(), "{readers:?} import config");
}

#[test]
fn the_reader_sees_the_crate_paths_it_checks() {
    let names = crate_paths("use crate::{db, sync::heal::{self, X}};\nlet x = crate::meter::f();");
    assert_eq!(names, ["db", "sync", "meter"]);
}
