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
//!
//! The client packages are tested as their users meet them: `clients/python` is pip-installed
//! into the venv and its `example.py` run against a server (and its committed stubs must equal
//! a fresh `generate.py` run over `proto/`); `clients/node/example.js` runs with the packages
//! `npm ci` installs from the committed lock, when `node` is on PATH (SKIPPED otherwise).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::Server;
use common::certs::TlsFiles;
use common::tools::{manifest_dir, run_bounded, tools};

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
    "WatchResumeTest",
    "AuthTest",
    "TlsTest",
];

/// The keyed servers' `--api-key` (credential `admin`) and `--read-only-api-key` (`read-only`).
const ADMIN_KEY: &str = "cross-language-admin-key-0123456789";
const READER_KEY: &str = "cross-language-reader-key-0123456789";

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
fn python_client_resumes_a_watch_after_its_connection_was_killed_without_loss_or_repeat() {
    run_client_test_class("WatchResumeTest");
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

// --- Client packages (clients/python, clients/node) ------------------------------------------

/// `pip install` of the client package, or `npm ci` of the Node example (first run: from the
/// registries; about 100 MB for Node, mostly google-proto-files).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Output lines the Python and Node examples print against a fresh server: the first token of
/// (domain 2, entity_type 5) is id 2 << 28 | 5 << 24 | 1.
const EXAMPLE_CREATED: &str = "created id=620756993 local_id=1";
const EXAMPLE_REJECTED: &str = "rejected: INVALID_ARGUMENT: token.weight: 2 is outside [0, 1]";
const EXAMPLE_VIOLATION: &str = "violation: token.weight: 2 is outside [0, 1]";

/// The generated modules of clients/python (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) in `dir`,
/// by name, with their contents.
fn generated_python_files(dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {dir:?}: {e}"))
        .map(|entry| entry.expect("a directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let generated = ["_pb2.py", "_pb2.pyi", "_pb2_grpc.py"]
                .iter()
                .any(|suffix| name.ends_with(suffix));
            generated.then(|| {
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
                (name, text)
            })
        })
        .collect()
}

#[test]
fn python_client_package_stubs_are_generated_from_the_current_protos() {
    let tools = tools();
    let out = tempfile::tempdir().expect("a temp dir");
    let mut command = Command::new(&tools.python);
    command
        .arg(manifest_dir().join("clients/python/generate.py"))
        .arg("--out")
        .arg(out.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(manifest_dir());
    let run = run_bounded(&mut command, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.succeeded(), "generate.py failed\n{}", run.report());

    let fresh = generated_python_files(&out.path().join("neurograph/v1"));
    let committed = generated_python_files(
        &manifest_dir().join("clients/python/src/neurograph_client/neurograph/v1"),
    );
    assert_eq!(
        fresh.len(),
        3 * 5,
        "three modules per proto file: {:?}",
        fresh.keys()
    );
    let names: std::collections::BTreeSet<&String> = fresh.keys().chain(committed.keys()).collect();
    let stale: Vec<&String> = names
        .into_iter()
        .filter(|name| fresh.get(*name) != committed.get(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "clients/python's generated stubs are stale (or extra) relative to proto/: {stale:?}; \
         regenerate them with the pinned grpcio-tools:\n  bash scripts/test-tools.sh >/dev/null && \
         target/test-tools/venv/bin/python clients/python/generate.py"
    );
}

/// Copies the client package's sources (not build output) from `from` into `to`.
fn copy_package_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {to:?}: {e}"));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {from:?}: {e}")) {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().expect("a file name").to_string_lossy();
        if name == "build" || name == "__pycache__" || name.ends_with(".egg-info") {
            continue;
        }
        if path.is_dir() {
            copy_package_sources(&path, &to.join(&*name));
        } else {
            std::fs::copy(&path, to.join(&*name)).unwrap_or_else(|e| panic!("copy {path:?}: {e}"));
        }
    }
}

/// Runs `command` under the venv's lock (the one scripts/test-tools.sh takes), so that no two
/// installs into the venv overlap.
fn under_venv_lock(tools: &common::tools::Tools, program: &Path) -> Command {
    let mut command = Command::new("flock");
    command
        .arg(format!("{}.lock", tools.venv().display()))
        .arg(program);
    command
}

#[test]
fn python_client_package_installs_with_pip_and_its_example_runs() {
    let tools = tools();
    // pip builds a local project in place (build/, *.egg-info): build a copy, not the tree.
    let copy = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir");
    let package = copy.path().join("python");
    copy_package_sources(&manifest_dir().join("clients/python"), &package);
    let mut install = under_venv_lock(tools, &tools.python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        // The build backend is the venv's pinned setuptools (tests/python/requirements.txt):
        // nothing is fetched, the pinned dependencies are already installed.
        .arg("--no-build-isolation")
        .arg(&package)
        .current_dir(copy.path());
    let run = run_bounded(&mut install, INSTALL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.succeeded(),
        "pip install clients/python failed\n{}",
        run.report()
    );
    let mut check = Command::new(&tools.python);
    check.args(["-m", "pip", "check", "--disable-pip-version-check"]);
    let run = run_bounded(&mut check, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.succeeded(),
        "the package's pinned dependencies do not match the venv\n{}",
        run.report()
    );

    let server = Server::start(&[]);
    let mut example = Command::new(&tools.python);
    example
        .arg(manifest_dir().join("clients/python/example.py"))
        .arg("--addr")
        .arg(&server.addr)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // Outside the repository: neurograph_client must come from the installed package.
        .current_dir(copy.path());
    let run = run_bounded(&mut example, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        run.succeeded()
            && lines
                == [
                    EXAMPLE_CREATED,
                    "got id=620756993 weight=0.5 l1_physical=(1.0, 2.0, 3.0)",
                    EXAMPLE_REJECTED,
                    EXAMPLE_VIOLATION,
                ],
        "clients/python/example.py did not print what it should\n{}\n--- server log ({})\n{}",
        run.report(),
        server.addr,
        server.log()
    );

    let mut origin = Command::new(&tools.python);
    origin
        .args([
            "-c",
            "import neurograph_client.neurograph.v1.token_pb2 as m; print(m.__file__); \
             print(m.Token.__module__)",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(copy.path());
    let run = run_bounded(&mut origin, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.succeeded()
            && run
                .stdout
                .contains("site-packages/neurograph_client/neurograph/v1/token_pb2.py")
            && run
                .stdout
                .contains("\nneurograph_client.neurograph.v1.token_pb2"),
        "neurograph_client is not imported from the installed package\n{}",
        run.report()
    );
    let site = tools.venv().join("lib");
    let stubs_installed = std::fs::read_dir(&site)
        .expect("the venv's lib/")
        .filter_map(Result::ok)
        .any(|python| {
            python
                .path()
                .join("site-packages/neurograph_client/neurograph/v1/token_pb2.pyi")
                .is_file()
                && python
                    .path()
                    .join("site-packages/neurograph_client/py.typed")
                    .is_file()
        });
    assert!(
        stubs_installed,
        "the .pyi stubs and py.typed were not installed"
    );
}

/// `npm ci` of clients/node's committed package-lock.json into `<target>/test-tools/node-client`
/// (not into the source tree), redone only when package.json or the lock changed. Returns its
/// node_modules.
fn node_modules() -> PathBuf {
    let source = manifest_dir().join("clients/node");
    let dir = common::tools::target_dir().join("test-tools/node-client");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
    let mut command = Command::new("flock");
    // Two test processes must not run npm ci in the same directory at once.
    command.arg(dir.join(".lock")).arg("bash").arg("-c").arg(
        r#"set -e
           cd "$1"
           cat "$2/package.json" "$2/package-lock.json" >.wanted
           if [ -d node_modules ] && cmp -s .wanted .installed; then
               echo "node-client: node_modules up to date"; exit 0
           fi
           rm -f .installed
           cp "$2/package.json" "$2/package-lock.json" .
           npm ci --no-audit --no-fund
           mv .wanted .installed"#,
    );
    command.arg("npm-ci").arg(&dir).arg(&source);
    let run = run_bounded(&mut command, INSTALL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.succeeded(),
        "npm ci for clients/node failed (is npm installed beside node?)\n{}",
        run.report()
    );
    dir.join("node_modules")
}

#[test]
fn node_client_example_runs_with_grpc_js_and_proto_loader() {
    if Command::new("node").arg("--version").output().is_err() {
        println!(
            "SKIPPED node_client_example_runs_with_grpc_js_and_proto_loader: no `node` on PATH"
        );
        return;
    }
    let modules = node_modules();
    let server = Server::start(&[]);
    let mut example = Command::new("node");
    example
        .arg(manifest_dir().join("clients/node/example.js"))
        .arg("--addr")
        .arg(&server.addr)
        // The packages npm ci installed from the committed lock (a clients/node/node_modules of
        // a developer's own npm ci would be found first, with the same versions).
        .env("NODE_PATH", &modules)
        .current_dir(manifest_dir().join("clients/node"));
    let run = run_bounded(&mut example, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        run.succeeded()
            && lines
                == [
                    EXAMPLE_CREATED,
                    "got id=620756993 weight=0.5 l1_physical=(1, 2, 3)",
                    // uint64 as a string: longs: String.
                    "count=\"1\"",
                    EXAMPLE_REJECTED,
                    EXAMPLE_VIOLATION,
                ],
        "clients/node/example.js did not print what it should\n{}\n--- server log ({})\n{}",
        run.report(),
        server.addr,
        server.log()
    );
}
