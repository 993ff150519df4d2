//! Records the git commit for the build-info metric: `AGL_GIT_COMMIT` when the build gives
//! one (a release workflow), else read from the checkout's `.git` files directly, so that a
//! container build (whose context carries `.git/HEAD` and the refs but no objects, and
//! whose image may have no git) records it too.

use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=AGL_GIT_COMMIT");
    let git = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        if git.join(watched).exists() {
            println!("cargo:rerun-if-changed={}", git.join(watched).display());
        }
    }
    let commit = std::env::var("AGL_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty() && c != "unknown")
        .or_else(|| head_commit(&git))
        .map_or_else(|| "unknown".to_owned(), |c| c.chars().take(12).collect());
    println!("cargo:rustc-env=AGL_GIT_COMMIT={commit}");
}

/// The commit `HEAD` names: a detached hash, or the branch's loose ref, or its line in
/// `packed-refs` (a fresh clone packs its refs).
fn head_commit(git: &Path) -> Option<String> {
    let head = fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref: ") else {
        return is_hash(head).then(|| head.to_owned());
    };
    if let Ok(loose) = fs::read_to_string(git.join(name)) {
        let loose = loose.trim();
        return is_hash(loose).then(|| loose.to_owned());
    }
    let packed = fs::read_to_string(git.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (hash, refname) = line.split_once(' ')?;
        (refname.trim() == name && is_hash(hash)).then(|| hash.to_owned())
    })
}

fn is_hash(s: &str) -> bool {
    s.len() >= 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
