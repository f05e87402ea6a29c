//! The protos' style, checked by buf: `buf lint` (STANDARD rules, with only the exceptions
//! `buf.yaml` lists and explains) and `buf format --diff --exit-code` over the module in
//! `proto/`. A proto change that breaks either fails here, with buf's own output.
//!
//! buf is the pinned PyPI `buf-bin` that `scripts/test-tools.sh` installs into the same venv as
//! the cross-language tools (see `tests/cross_language.rs`; the script's lock serialises
//! concurrent runs, and a run with nothing to do only checks).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tools::{manifest_dir, run_bounded, target_dir, tools};

/// One buf command over five files (it takes well under a second).
const BUF_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `buf <args>` at the repository root (where `buf.yaml` is) and fails with buf's output
/// unless it exits 0.
fn assert_buf_passes(args: &[&str], what_failed: &str) {
    let mut command = Command::new(&tools().buf);
    command
        .args(args)
        .current_dir(manifest_dir())
        // buf keeps a copy of the well-known types in its cache: beside the venv, not in $HOME.
        .env("BUF_CACHE_DIR", target_dir().join("test-tools/buf-cache"));
    let run = run_bounded(&mut command, BUF_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.succeeded(),
        "{what_failed}: fix the .proto files (or, for a rule that conflicts with a name \
         ../shared/API.md fixes, add the narrowest `ignore_only` entry to buf.yaml and say why)\n{}",
        run.report()
    );
}

#[test]
fn buf_lint_passes_with_the_standard_rules() {
    assert_buf_passes(&["lint"], "buf lint found problems");
}

#[test]
fn buf_format_leaves_every_proto_unchanged() {
    // --diff prints what `buf format -w` would change; --exit-code makes any change a failure.
    assert_buf_passes(
        &["format", "--diff", "--exit-code"],
        "buf format would change the protos (run `buf format -w`)",
    );
}

#[test]
fn proto_holds_only_the_neurograph_v1_contract() {
    // Users generate code from all of proto/: anything else there (such as the reflection-only
    // google.rpc subset in proto-reflection/) would end up in their packages and could shadow
    // the real googleapis modules.
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}")) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let root = manifest_dir().join("proto");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(!files.is_empty(), "no files under {root:?}");
    for file in &files {
        let relative = file.strip_prefix(&root).expect("below proto/");
        assert!(
            relative.starts_with("neurograph/v1") && relative.extension() == Some("proto".as_ref()),
            "proto/{} is not a neurograph/v1 .proto file: proto/ holds only the wire contract",
            relative.display()
        );
    }
    assert!(
        manifest_dir()
            .join("proto-reflection/google/rpc/error_details.proto")
            .is_file(),
        "the reflection-only BadRequest subset is missing from proto-reflection/"
    );
}
