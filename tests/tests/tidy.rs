//! Tidy checks over the source tree: the dependency direction between crates, a `//!`
//! line atop every file, and no clock, randomness or hash-map order in the replicated core.

use std::path::{Path, PathBuf};
use tollgate_tests::workspace_dir;

/// Which workspace crates each crate may depend on (`proto` ← `raft` ← `node` ← `sim`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("raft", &["tollgate-proto"]),
    ("node", &["tollgate-proto", "tollgate-raft"]),
    ("sim", &["tollgate-proto", "tollgate-raft", "tollgate-node"]),
    (
        "bench",
        &["tollgate-proto", "tollgate-raft", "tollgate-node"],
    ),
];

fn workspace_deps(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let doc: toml::Table = toml::from_str(&text).unwrap_or_default();
    let mut deps = Vec::new();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(table) = doc.get(section).and_then(|t| t.as_table()) {
            deps.extend(table.keys().filter(|k| k.starts_with("tollgate-")).cloned());
        }
    }
    deps
}

#[test]
fn crates_depend_only_downwards() {
    for (krate, allowed) in ALLOWED {
        for dep in workspace_deps(&workspace_dir().join(krate).join("Cargo.toml")) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{krate} must not depend on {dep} (allowed: {allowed:?})"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_says_what_it_is_for() {
    let mut files = Vec::new();
    for krate in ["proto", "raft", "node", "sim", "bench", "tests"] {
        rust_files(&workspace_dir().join(krate), &mut files);
    }
    assert!(files.len() > 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            text.starts_with("//!"),
            "{} must open with a //! line",
            f.display()
        );
    }
}

#[test]
fn replicated_core_has_no_clock_randomness_or_hash_order() {
    let mut files = Vec::new();
    rust_files(&workspace_dir().join("raft/src"), &mut files);
    rust_files(&workspace_dir().join("proto/src"), &mut files);
    let banned = [
        "SystemTime",
        "Instant::now",
        "HashMap",
        "HashSet",
        "rand::",
        "thread_rng",
        "tokio::",
    ];
    // The one exception: openraft's async runtime (election timeouts draw random numbers;
    // nothing there touches replicated state, and the simulator seeds it).
    let runtime = workspace_dir().join("raft/src/runtime.rs");
    for f in files.into_iter().filter(|f| *f != runtime) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for word in banned {
            assert!(
                !text.contains(word),
                "{} uses {word}; replicated state must be deterministic",
                f.display()
            );
        }
    }
}

/// The crates whose `src` is production code, checked for size, layout docs and cycles.
const SOURCE_CRATES: &[&str] = &["proto", "raft", "node", "sim", "bench"];

/// Whether `path` holds tests only: a `tests.rs` (or `*_tests.rs`, `test_support.rs`)
/// module, or anything under a crate's `tests/` folder.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || name == "test_support.rs"
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn source_files(krate: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_dir().join(krate).join("src"), &mut files);
    files.sort();
    files
}

#[test]
fn node_src_is_a_few_rooms() {
    let entries = std::fs::read_dir(workspace_dir().join("node/src"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        (1..=12).contains(&entries),
        "node/src has {entries} entries; group modules into folders named for their concern"
    );
}

#[test]
fn production_files_stay_under_500_lines() {
    for krate in SOURCE_CRATES {
        for f in source_files(krate).into_iter().filter(|f| !is_test_file(f)) {
            let lines = std::fs::read_to_string(&f)
                .unwrap_or_default()
                .lines()
                .count();
            assert!(
                lines <= 500,
                "{} has {lines} lines: split it by concern (tests go to a `tests.rs`)",
                f.display()
            );
        }
    }
}

/// The submodules a file declares (`mod x;`), except test-only ones.
fn declared_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cfg_test = false;
    for line in text.lines().map(str::trim) {
        let decl = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'));
        if let Some(name) = decl {
            if !cfg_test {
                out.push(name.to_owned());
            }
        }
        if !line.is_empty() {
            cfg_test = line == "#[cfg(test)]";
        }
    }
    out
}

#[test]
fn every_layout_names_every_submodule() {
    for krate in SOURCE_CRATES {
        for f in source_files(krate) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let modules = declared_modules(&text);
            if modules.is_empty() {
                continue;
            }
            let doc: String = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join("\n");
            let layout = doc.split_once("# Layout").map(|(_, l)| l);
            let Some(layout) = layout else {
                panic!(
                    "{} declares modules but has no `# Layout` in its //! doc",
                    f.display()
                );
            };
            for m in modules {
                assert!(
                    layout.contains(&format!("`{m}`")) || layout.contains(&format!("`{m}.rs`")),
                    "{}: its `# Layout` does not name the module `{m}`",
                    f.display()
                );
            }
        }
    }
}

/// Source text with comments and string and char literals blanked out.
fn code_only(src: &str) -> String {
    let bytes: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i] == '/' && bytes.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == '*' && bytes.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while bytes.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if bytes.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= bytes.len() {
                    break;
                }
                if bytes[j] == '"' && (0..hashes).all(|k| bytes.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != '"' {
                j += if bytes[j] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime (left as it is).
            let close = if next == Some('\\') {
                (i + 2..bytes.len().min(i + 12)).find(|&j| bytes[j] == '\'')
            } else if bytes.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(j) => {
                    out.push_str("' '");
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// One crate's modules: module path (`["cluster", "gossip"]`) → file, and back.
struct ModuleTree {
    files: std::collections::BTreeMap<Vec<String>, PathBuf>,
}

impl ModuleTree {
    fn load(root: &Path) -> ModuleTree {
        let mut tree = ModuleTree {
            files: std::collections::BTreeMap::new(),
        };
        tree.discover(root.to_path_buf(), Vec::new());
        tree
    }

    fn discover(&mut self, file: PathBuf, path: Vec<String>) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = match name {
            "lib.rs" | "main.rs" | "mod.rs" => file.parent().map(Path::to_path_buf),
            _ => file.with_extension("").into(),
        }
        .unwrap_or_default();
        self.files.insert(path.clone(), file.clone());
        let mut all = declared_modules(&text);
        // Test-only modules are files too.
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                if !all.iter().any(|m| m == name) {
                    all.push(name.to_owned());
                }
            }
        }
        for m in all {
            let candidate = [dir.join(format!("{m}.rs")), dir.join(&m).join("mod.rs")]
                .into_iter()
                .find(|p| p.exists());
            if let Some(child) = candidate {
                let mut child_path = path.clone();
                child_path.push(m);
                self.discover(child, child_path);
            }
        }
    }

    /// The longest module prefix of `path`.
    fn resolve(&self, path: &[String]) -> Option<&Vec<String>> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.files.get_key_value(&path[..n]).map(|(k, _)| k))
    }
}

/// Expands a `use` tree (`a::{b, c::{d as e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn parse(s: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        let mut word = String::new();
        while *i < s.len() {
            let c = s[*i];
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
                *i += 1;
            } else if c == ':' {
                if !word.is_empty() {
                    path.push(std::mem::take(&mut word));
                }
                *i += 1;
            } else if c == '{' {
                if !word.is_empty() {
                    path.push(std::mem::take(&mut word));
                }
                *i += 1;
                loop {
                    parse(s, i, &path, out);
                    match s.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            } else if c == ',' || c == '}' {
                break;
            } else if c.is_whitespace() {
                // `x as y`: the alias is not part of the path.
                let rest: String = s[*i..].iter().take(4).collect();
                if rest.trim_start().starts_with("as ") {
                    if !word.is_empty() {
                        path.push(std::mem::take(&mut word));
                    }
                    while *i < s.len() && s[*i] != ',' && s[*i] != '}' {
                        *i += 1;
                    }
                    out.push(path);
                    return;
                }
                *i += 1;
            } else {
                // `*`
                *i += 1;
            }
        }
        let is_self = word == "self";
        if !word.is_empty() && !is_self {
            path.push(word);
        }
        // A trailing comma leaves an empty element; `{self, ..}` names the prefix itself.
        if path.len() > prefix.len() || is_self {
            out.push(path);
        }
    }
    let chars: Vec<char> = tree.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    parse(&chars, &mut i, &[], &mut out);
    out
}

/// A file's code without comments, strings and its inline test module (at the end of a
/// file; inside it, `super::` is the file's own module).
fn file_code(file: &Path) -> String {
    let mut code = code_only(&std::fs::read_to_string(file).unwrap_or_default());
    if let Some(at) = code.find("#[cfg(test)]\nmod tests {") {
        code.truncate(at);
    }
    code
}

type Reexports = std::collections::BTreeMap<Vec<String>, Vec<(String, Vec<String>)>>;

/// Where a module's `pub use` of a child sends each name: a name re-exported by a
/// parent belongs to the child that defines it, not to the parent.
fn reexports(tree: &ModuleTree) -> Reexports {
    let mut out = Reexports::new();
    for (module, file) in &tree.files {
        let code = file_code(file);
        let mut names = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("pub use ") {
            rest = &rest[at + 8..];
            let end = rest.find(';').unwrap_or(rest.len());
            for path in expand_use(&rest[..end]) {
                let Some(first) = path.first() else { continue };
                if ["crate", "super", "self"].contains(&first.as_str()) {
                    continue;
                }
                let mut target = module.clone();
                target.extend(path.iter().cloned());
                if let Some(child) = tree.resolve(&target) {
                    if child.len() > module.len() {
                        let name = if child.len() == target.len() {
                            "*".to_owned()
                        } else {
                            path.last().cloned().unwrap_or_default()
                        };
                        names.push((name, child.clone()));
                    }
                }
            }
        }
        out.insert(module.clone(), names);
    }
    out
}

/// The file that defines what `path` names: its longest module prefix, or the child a
/// re-export of that module sends the next name to.
fn target_file(tree: &ModuleTree, reexports: &Reexports, path: &[String]) -> Option<PathBuf> {
    let module = tree.resolve(path)?;
    let file = tree.files[module].clone();
    let Some(name) = path.get(module.len()) else {
        return Some(file);
    };
    let names = reexports.get(module).map(Vec::as_slice).unwrap_or_default();
    if let Some((_, child)) = names.iter().find(|(n, _)| n == name) {
        return Some(tree.files[child].clone());
    }
    // A glob re-export: the child whose file defines the name.
    for (_, child) in names.iter().filter(|(n, _)| n == "*") {
        let text = file_code(&tree.files[child]);
        // An item, or one a macro makes (`id_type! { TeamId = "team_"; }`).
        let defines = ["struct", "enum", "fn", "type", "trait", "const"]
            .iter()
            .any(|kw| text.contains(&format!("{kw} {name}")))
            || text.contains(&format!("{name} = "));
        if defines {
            return Some(tree.files[child].clone());
        }
    }
    Some(file)
}

/// The files each file of a crate refers to through `crate::`, `super::` and `self::`
/// paths and `use` of its child modules.
fn file_edges(
    tree: &ModuleTree,
) -> std::collections::BTreeMap<PathBuf, std::collections::BTreeSet<PathBuf>> {
    let reexports = reexports(tree);
    let mut edges = std::collections::BTreeMap::new();
    for (module, file) in &tree.files {
        let code = file_code(file);
        let mut paths: Vec<Vec<String>> = Vec::new();
        // `use` trees, expanded.
        let mut rest = code.as_str();
        while let Some(at) = rest.find("use ") {
            let before = rest[..at].chars().last();
            rest = &rest[at + 4..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = rest.find(';').unwrap_or(rest.len());
            paths.extend(expand_use(&rest[..end]));
        }
        // Paths in code.
        let chars: Vec<char> = code.chars().collect();
        for start in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(at) = code[from..].find(start) {
                let at = from + at;
                from = at + start.len();
                if at > 0
                    && code[..at]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                {
                    continue;
                }
                let mut j = code[..at].chars().count();
                let mut segment = String::new();
                let mut path = Vec::new();
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == ':')
                {
                    if chars[j] == ':' {
                        if !segment.is_empty() {
                            path.push(std::mem::take(&mut segment));
                        }
                    } else {
                        segment.push(chars[j]);
                    }
                    j += 1;
                }
                // `crate::{..}` and `super::*` are use trees, expanded above.
                if segment.is_empty() && matches!(chars.get(j), Some('{' | '*')) {
                    continue;
                }
                if !segment.is_empty() {
                    path.push(segment);
                }
                paths.push(path);
            }
        }
        let children: Vec<String> = tree
            .files
            .keys()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
            .filter_map(|k| k.last().cloned())
            .collect();
        let mut targets = std::collections::BTreeSet::new();
        for path in paths {
            let mut absolute: Vec<String> = match path.first().map(String::as_str) {
                Some("crate") => Vec::new(),
                Some("super") => module.clone(),
                Some("self") => module.clone(),
                Some(first) if children.iter().any(|c| c == first) => {
                    let mut p = module.clone();
                    p.extend(path.iter().cloned());
                    targets.extend(target_file(tree, &reexports, &p));
                    continue;
                }
                _ => continue,
            };
            let mut rest = &path[..];
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "crate" | "self" => {}
                    "super" => {
                        absolute.pop();
                    }
                    _ => break,
                }
                rest = &rest[1..];
            }
            absolute.extend(rest.iter().cloned());
            targets.extend(target_file(tree, &reexports, &absolute));
        }
        targets.remove(file);
        edges.insert(file.clone(), targets);
    }
    edges
}

#[test]
fn no_import_cycles_between_files() {
    for (krate, root) in [
        ("proto", "lib.rs"),
        ("raft", "lib.rs"),
        ("node", "lib.rs"),
        ("node", "main.rs"),
        ("sim", "lib.rs"),
        ("bench", "main.rs"),
    ] {
        let tree = ModuleTree::load(&workspace_dir().join(krate).join("src").join(root));
        assert!(tree.files.len() > 1 || krate == "proto" || root == "main.rs");
        let edges = file_edges(&tree);
        // Depth-first search for a back edge.
        fn visit(
            file: &PathBuf,
            edges: &std::collections::BTreeMap<PathBuf, std::collections::BTreeSet<PathBuf>>,
            stack: &mut Vec<PathBuf>,
            done: &mut std::collections::BTreeSet<PathBuf>,
        ) -> Option<Vec<PathBuf>> {
            if let Some(at) = stack.iter().position(|f| f == file) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(file.clone());
                return Some(cycle);
            }
            if done.contains(file) {
                return None;
            }
            stack.push(file.clone());
            for next in edges.get(file).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, stack, done) {
                    return Some(cycle);
                }
            }
            stack.pop();
            done.insert(file.clone());
            None
        }
        let mut done = std::collections::BTreeSet::new();
        for file in edges.keys() {
            let cycle = visit(file, &edges, &mut Vec::new(), &mut done);
            assert!(
                cycle.is_none(),
                "import cycle in {krate}: {}",
                cycle
                    .unwrap_or_default()
                    .iter()
                    .map(|f| f
                        .strip_prefix(workspace_dir())
                        .unwrap_or(f)
                        .display()
                        .to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_check_sees_use_trees_and_paths() {
    let paths = expand_use("super::{a, b::{c as d, e,}, f::*,\n}");
    let want: Vec<Vec<String>> = [
        vec!["super", "a"],
        vec!["super", "b", "c"],
        vec!["super", "b", "e"],
        vec!["super", "f"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(paths, want);
    assert_eq!(
        code_only("let s = \"crate::x\"; // crate::y\nx"),
        "let s = \"\"; \nx"
    );
}
