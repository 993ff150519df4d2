//! Records the git commit for the build-info metric, unless the build already provides one
//! (`AGL_GIT_COMMIT`, as the container builds do, where `.git` is not copied in).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AGL_GIT_COMMIT");
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    if top.join("HEAD").exists() {
        println!("cargo:rerun-if-changed={}", top.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", top.join("refs").display());
    }
    let commit = std::env::var("AGL_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        });
    println!(
        "cargo:rustc-env=AGL_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}
