//! `agl vllm` reaches the launcher of the agl-vllm crate: `--agl-*` flags are agl's, every
//! other argument goes to `vllm` unchanged and its exit status comes back. The `vllm` on
//! PATH is the test double (`agl vllm fake-vllm`), which records the arguments it got.

use std::path::Path;
use std::process::Command;

fn fake_vllm_on_path(dir: &Path) -> String {
    let script = dir.join("vllm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' vllm fake-vllm \"$@\"\n",
            env!("CARGO_BIN_EXE_agl")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn agl_help_lists_the_launcher_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_agl"))
        .args(["vllm", "--agl-help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--agl-port"), "{help}");
    assert!(help.contains("--agl-restart"), "{help}");
}

#[test]
fn one_shot_commands_pass_through_with_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_vllm_on_path(dir.path());
    let args_file = dir.path().join("args.jsonl");

    let version = Command::new(env!("CARGO_BIN_EXE_agl"))
        .args(["vllm", "--version"])
        .env("PATH", &path)
        .env("AGL_DOUBLE_ARGS_FILE", &args_file)
        .output()
        .unwrap();
    assert!(version.status.success(), "{version:?}");
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "0.11.0");

    // An unknown vLLM subcommand: vLLM's own error and exit status 2 come back, and the
    // --agl-* flag in the middle is not passed on.
    let bad = Command::new(env!("CARGO_BIN_EXE_agl"))
        .args(["vllm", "frobnicate", "--agl-restart", "never", "--x=1", "y"])
        .env("PATH", &path)
        .env("AGL_DOUBLE_ARGS_FILE", &args_file)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid choice: 'frobnicate'"));

    let recorded: Vec<Vec<String>> = std::fs::read_to_string(&args_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        recorded,
        vec![
            vec!["--version".to_owned()],
            vec!["frobnicate".to_owned(), "--x=1".to_owned(), "y".to_owned()],
        ]
    );
}

#[test]
fn a_missing_vllm_exits_127_and_points_to_the_launchers_own_help() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--version", "--help"] {
        let out = Command::new(env!("CARGO_BIN_EXE_agl"))
            .args(["vllm", flag])
            .env("PATH", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(127), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("--agl-help"), "{said}");
    }
    // And that help needs no vLLM.
    let out = Command::new(env!("CARGO_BIN_EXE_agl"))
        .args(["vllm", "--agl-help"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--agl-vllm-bin"));
}
