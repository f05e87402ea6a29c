//! Cross-language tests: the real `neurograph` binary driven by clients that are not ours — a
//! Python client (grpcio, grpcio-status, grpcio-health-checking, grpcio-reflection, with stubs
//! generated from `proto/`) and the real grpcurl 1.8.6 speaking only reflection and JSON.
//!
//! `scripts/test-tools.sh` installs the tools into a venv under the target directory (pinned
//! from PyPI on the first run, then reused) and generates the stubs; the checks themselves live
//! in `tests/python/`. Each test starts its own server on `127.0.0.1:0`, learns the port from
//! its "neurograph listening on" log line and kills it when done, failed or not. What the Rust
//! unit and integration tests check with tonic's client is not repeated here: this file is
//! about what other languages' stock tools see on the wire.
//!
//! Access control and TLS (API.md §7) get runs of their own: servers started with an admin and
//! a reader key, one of them on TLS with a certificate from a CA made at run time
//! (`common::certs`), the scripts told the keys and the CA through their arguments.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};

use common::binary::Server;
use common::certs::TlsFiles;
use std::thread;
use std::time::{Duration, Instant};

/// First run: a venv plus about 20 MB of wheels from PyPI (pip's own timeout is 180 s a request).
const TOOLS_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// One Python script against a running server (its calls have 10 s deadlines each).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The Python test classes of `client_test.py`, each run by one test below.
const CLIENT_TEST_CLASSES: &[&str] = &[
    "TokenCreateTest",
    "TokenGetTest",
    "TokenListTest",
    "HealthTest",
    "ReflectionTest",
    "SystemTest",
    "GridTest",
    "CdnaTest",
    "AuthTest",
    "TlsTest",
];

/// The keyed servers' `--api-key` (credential `admin`) and `--read-only-api-key` (`read-only`).
const ADMIN_KEY: &str = "cross-language-admin-key-0123456789";
const READER_KEY: &str = "cross-language-reader-key-0123456789";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What `scripts/test-tools.sh` installed.
#[derive(Debug)]
struct Tools {
    python: PathBuf,
    grpcurl: PathBuf,
    stubs: PathBuf,
}

/// Runs `scripts/test-tools.sh` once per test process; every test waits for that one run.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    match TOOLS.get_or_init(install_tools) {
        Ok(tools) => tools,
        Err(report) => panic!("{report}"),
    }
}

fn install_tools() -> Result<Tools, String> {
    let script = manifest_dir().join("scripts/test-tools.sh");
    let mut command = Command::new("bash");
    command.arg(&script).current_dir(manifest_dir());
    if std::env::var_os("NEUROGRAPH_TEST_VENV").is_none() {
        // Beside the build output, wherever CARGO_TARGET_DIR puts it (CARGO_TARGET_TMPDIR is
        // <target>/tmp); the script's own default assumes ./target.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR is <target>/tmp");
        command.env("NEUROGRAPH_TEST_VENV", target.join("test-tools/venv"));
    }
    let started = Instant::now();
    let run = run_bounded(&mut command, TOOLS_TIMEOUT)?;
    if !run.succeeded() {
        return Err(format!(
            "scripts/test-tools.sh failed after {:.1?}\n{}",
            started.elapsed(),
            run.report()
        ));
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
        stubs: value("stubs")?,
    })
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
                // The group, not just the child: pip and grpcurl run subprocesses of their own.
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

/// Runs `tests/python/<script>` against `server` and fails the test with every output unless
/// the script exits 0 after printing its `N passed, 0 failed` line.
fn run_python_script(server: &Server, script: &str, extra_args: &[&str]) {
    let tools = tools();
    let mut command = Command::new(&tools.python);
    command
        .arg(manifest_dir().join("tests/python").join(script))
        .arg("--addr")
        .arg(&server.addr)
        .arg("--stubs")
        .arg(&tools.stubs)
        .arg("--grpcurl")
        .arg(&tools.grpcurl)
        .arg("--crate-version")
        .arg(env!("CARGO_PKG_VERSION"))
        .args(extra_args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(manifest_dir());
    let run = run_bounded(&mut command, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let summary = run
        .stdout
        .lines()
        .rev()
        .find(|line| line.contains(" passed, "))
        .unwrap_or("");
    let passed_all = summary
        .split_once(" passed, 0 failed")
        .and_then(|(passed, _)| passed.trim().parse::<u32>().ok())
        .is_some_and(|passed| passed > 0);
    assert!(
        run.succeeded() && passed_all,
        "{script} failed\n{}\n--- server log ({})\n{}",
        run.report(),
        server.addr,
        server.log()
    );
}

/// Runs one TestCase class of `client_test.py` against a fresh plaintext server without
/// credentials (protected mode admits the script's loopback calls as admin).
fn run_client_test_class(class: &str) {
    let server = Server::start(&[]);
    run_client_test_class_on(&server, class, &[]);
}

/// Runs one TestCase class of `client_test.py` against `server`, with `script_args` (the keys
/// and the CA the class needs) before the class pattern.
fn run_client_test_class_on(server: &Server, class: &str, script_args: &[&str]) {
    assert!(
        CLIENT_TEST_CLASSES.contains(&class),
        "{class} is not listed"
    );
    let pattern = format!(".{class}.");
    let args: Vec<&str> = script_args.iter().copied().chain([&*pattern]).collect();
    run_python_script(server, "client_test.py", &args);
}

/// A server that wants a key: `--api-key ADMIN_KEY --read-only-api-key READER_KEY`, on TLS
/// with a run-time CA's certificate when `tls` is true.
struct KeyedServer {
    /// Dropped (killed) before `tls` deletes the certificate files.
    server: Server,
    tls: Option<TlsFiles>,
}

impl KeyedServer {
    fn start(tls: bool) -> KeyedServer {
        let tls = tls.then(TlsFiles::new);
        let mut args = vec!["--api-key", ADMIN_KEY, "--read-only-api-key", READER_KEY];
        if let Some(files) = &tls {
            args.extend(["--tls-cert", utf8(&files.cert_path)]);
            args.extend(["--tls-key", utf8(&files.key_path)]);
        }
        KeyedServer {
            server: Server::start(&args),
            tls,
        }
    }

    /// Fails if the server logged a key (API.md §7: never), after clients sent them all.
    fn assert_no_key_logged(&self) {
        let log = self.server.log();
        assert!(
            !log.contains(ADMIN_KEY) && !log.contains(READER_KEY),
            "a key is in the server log\n{log}"
        );
    }

    /// What the scripts need to know: the keys and, on TLS, the CA to trust.
    fn script_args(&self) -> Vec<&str> {
        let mut args = vec!["--api-key", ADMIN_KEY, "--read-only-api-key", READER_KEY];
        if let Some(files) = &self.tls {
            args.extend(["--tls-ca", utf8(&files.ca_path)]);
        }
        args
    }
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[test]
fn python_client_creates_tokens_with_allocated_and_explicit_ids_and_bad_request_details() {
    run_client_test_class("TokenCreateTest");
}

#[test]
fn python_client_gets_tokens_with_quantised_values_and_not_found_for_unknown_ids() {
    run_client_test_class("TokenGetTest");
}

#[test]
fn python_client_pages_through_tokens_in_id_order_without_repeats() {
    run_client_test_class("TokenListTest");
}

#[test]
fn python_health_client_sees_serving_services_and_not_found_for_unknown_ones() {
    run_client_test_class("HealthTest");
}

#[test]
fn python_reflection_client_lists_only_served_services_over_v1_and_v1alpha() {
    run_client_test_class("ReflectionTest");
}

#[test]
fn python_client_reads_system_health_ready_and_status() {
    run_client_test_class("SystemTest");
}

#[test]
fn python_client_queries_grids_against_brute_force_and_manages_user_grids() {
    run_client_test_class("GridTest");
}

#[test]
fn python_client_updates_the_cdna_config_and_validates_scales() {
    run_client_test_class("CdnaTest");
}

#[test]
fn python_client_is_refused_without_a_key_and_limited_by_its_role() {
    let keyed = KeyedServer::start(false);
    run_client_test_class_on(&keyed.server, "AuthTest", &keyed.script_args());
    keyed.assert_no_key_logged();
}

#[test]
fn python_client_trusts_the_test_ca_over_tls_and_still_needs_a_key() {
    let keyed = KeyedServer::start(true);
    run_client_test_class_on(&keyed.server, "TlsTest", &keyed.script_args());
    keyed.assert_no_key_logged();
}

#[test]
fn grpcurl_1_8_6_lists_describes_and_calls_services_with_json() {
    let server = Server::start(&[]);
    run_python_script(&server, "grpcurl_test.py", &[".GrpcurlTest."]);
}

#[test]
fn grpcurl_calls_over_tls_with_a_bearer_key_and_is_refused_without_one() {
    let keyed = KeyedServer::start(true);
    let mut args = keyed.script_args();
    args.push(".GrpcurlTlsTest.");
    run_python_script(&keyed.server, "grpcurl_test.py", &args);
    keyed.assert_no_key_logged();
}

#[test]
fn every_python_client_test_class_is_run_by_a_rust_test() {
    let source = std::fs::read_to_string(manifest_dir().join("tests/python/client_test.py"))
        .expect("read tests/python/client_test.py");
    let classes: Vec<&str> = source
        .lines()
        .filter_map(|line| line.strip_prefix("class "))
        .filter(|rest| rest.contains("(ServerTestCase)"))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(!classes.is_empty(), "no ServerTestCase class found");
    for class in &classes {
        assert!(
            CLIENT_TEST_CLASSES.contains(class),
            "client_test.py class {class} is run by no test in tests/cross_language.rs"
        );
    }
    // Listed is not enough: some test must hand the class to one of the runners above.
    let this_file = std::fs::read_to_string(manifest_dir().join("tests/cross_language.rs"))
        .expect("read tests/cross_language.rs");
    let runs: Vec<&str> = this_file
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with("run_client_test_class"))
        .collect();
    for class in CLIENT_TEST_CLASSES {
        assert!(
            classes.contains(class),
            "{class} is gone from client_test.py"
        );
        assert!(
            runs.iter()
                .any(|line| line.contains(&format!("\"{class}\""))),
            "{class} is listed but no test runs it"
        );
    }
}
