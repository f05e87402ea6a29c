"""Shared plumbing of the cross-language test scripts: arguments, stub path, the runner.

Each script is run by tests/cross_language.rs against a freshly started server, with the venv
made by scripts/test-tools.sh. Arguments fall back to environment variables so a script can also
be run by hand against any server:

    python tests/python/client_test.py --addr 127.0.0.1:50051 --stubs target/test-tools/venv/neurograph-stubs

Against a server started with keys and TLS (API.md §7), the access-control classes also need
the keys it was given and the CA that signed its certificate:

    python tests/python/client_test.py --addr 127.0.0.1:50051 --stubs STUBS \
        --api-key ADMIN_KEY --read-only-api-key READER_KEY --tls-ca ca.pem AuthTest TlsTest
"""

import argparse
import os
import sys
import unittest

import grpc

# Every call gets a deadline, so a server that stops answering fails the test instead of hanging.
RPC_TIMEOUT_SECONDS = 10.0


class Config:
    """What the scripts learn from their arguments."""

    addr = ""
    stubs = ""
    grpcurl = ""
    crate_version = ""
    # The server's admin (--api-key) and reader (--read-only-api-key) keys; empty = not keyed.
    api_key = ""
    read_only_api_key = ""
    # PEM file of the CA that signed the server's certificate; empty = the server is plaintext.
    tls_ca = ""
    patterns = []


CONFIG = Config()


def configure(description):
    """Parses argv (with env fallbacks), puts the generated stubs on sys.path, returns CONFIG."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--addr",
        default=os.environ.get("NEUROGRAPH_ADDR", ""),
        help="host:port of a running neurograph server (env NEUROGRAPH_ADDR)",
    )
    parser.add_argument(
        "--stubs",
        default=os.environ.get("NEUROGRAPH_PY_STUBS", ""),
        help="directory with the generated neurograph/v1/*_pb2*.py (env NEUROGRAPH_PY_STUBS)",
    )
    parser.add_argument(
        "--grpcurl",
        default=os.environ.get("NEUROGRAPH_GRPCURL", ""),
        help="path of the grpcurl binary (env NEUROGRAPH_GRPCURL)",
    )
    parser.add_argument(
        "--crate-version",
        default=os.environ.get("NEUROGRAPH_CRATE_VERSION", ""),
        help="version the server must report (env NEUROGRAPH_CRATE_VERSION); empty = any",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("NEUROGRAPH_API_KEY", ""),
        help="the server's admin key, as given to its --api-key (env NEUROGRAPH_API_KEY)",
    )
    parser.add_argument(
        "--read-only-api-key",
        default=os.environ.get("NEUROGRAPH_READ_ONLY_API_KEY", ""),
        help="the server's reader key, as given to its --read-only-api-key"
        " (env NEUROGRAPH_READ_ONLY_API_KEY)",
    )
    parser.add_argument(
        "--tls-ca",
        default=os.environ.get("NEUROGRAPH_TLS_CA", ""),
        help="PEM file of the CA that signed the server's --tls-cert: connect over TLS"
        " trusting only it (env NEUROGRAPH_TLS_CA); empty = plaintext",
    )
    parser.add_argument(
        "patterns",
        nargs="*",
        help="run only the tests whose name contains one of these substrings",
    )
    args = parser.parse_args()
    if not args.addr:
        parser.error("--addr (or NEUROGRAPH_ADDR) is required")
    if args.stubs:
        sys.path.insert(0, os.path.abspath(args.stubs))
    CONFIG.addr = args.addr
    CONFIG.stubs = args.stubs
    CONFIG.grpcurl = args.grpcurl
    CONFIG.crate_version = args.crate_version
    CONFIG.api_key = args.api_key
    CONFIG.read_only_api_key = args.read_only_api_key
    CONFIG.tls_ca = args.tls_ca
    CONFIG.patterns = args.patterns
    return CONFIG


def connect(credentials=None):
    """A channel to the server once it accepts connections (bounded wait).

    Plaintext unless --tls-ca is given; then TLS trusting only that CA, with `credentials`
    (call credentials, e.g. grpc.access_token_call_credentials) added to every call if given.
    """
    if CONFIG.tls_ca:
        channel = grpc.secure_channel(CONFIG.addr, tls_credentials(credentials))
    else:
        assert credentials is None, "grpcio sends call credentials over TLS only"
        channel = grpc.insecure_channel(CONFIG.addr)
    grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_SECONDS)
    return channel


def tls_credentials(call_credentials=None):
    """Channel credentials trusting only the --tls-ca file, plus `call_credentials` if given.

    The root is given explicitly: grpcio's default roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, else
    its bundled set) do not hold the test CA.
    """
    with open(CONFIG.tls_ca, "rb") as pem:
        credentials = grpc.ssl_channel_credentials(root_certificates=pem.read())
    if call_credentials is not None:
        credentials = grpc.composite_channel_credentials(credentials, call_credentials)
    return credentials


def run(module):
    """Runs every unittest.TestCase in `module`; prints `N passed, M failed`; returns the exit code."""
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite()
    for test in _flatten(loader.loadTestsFromModule(module)):
        if not CONFIG.patterns or any(p in test.id() for p in CONFIG.patterns):
            suite.addTest(test)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    # Counted per test: a test with several failed subTests is one failed test, and a class
    # whose setUpClass failed or skipped is one entry although none of its tests ran.
    failed_tests = {_test_id(t) for t, _ in result.failures + result.errors}
    # A test marked as a known bug (expectedFailure) that passes means the bug is fixed: it
    # fails the run so that the marker gets removed.
    failed_tests |= {_test_id(t) for t in result.unexpectedSuccesses}
    skipped_tests = {_test_id(t) for t, _ in result.skipped} - failed_tests
    failed = len(failed_tests)
    skipped = len(skipped_tests)
    passed = max(result.testsRun - failed - skipped, 0)
    for test, _ in result.expectedFailures:
        print(f"known bug, still failing: {test.id()}")
    for test in result.unexpectedSuccesses:
        print(f"known bug no longer fails (remove @expectedFailure): {test.id()}")
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary, flush=True)
    if result.testsRun == 0:
        print("no test ran", file=sys.stderr)
        return 1
    return 0 if failed == 0 else 1


def main(module):
    """Runs `module`'s tests and exits at once with their status.

    os._exit skips interpreter shutdown, where grpcio's background threads can keep a process
    alive after a failure; everything printed has been flushed by then.
    """
    code = run(module)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _test_id(test):
    """The id of the test a result entry is about (a subTest's entry names its test)."""
    return getattr(test, "test_case", test).id()


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item
