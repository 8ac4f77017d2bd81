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
    for krate in ["proto", "raft", "node", "sim", "tests"] {
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
