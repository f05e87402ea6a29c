"""Shared plumbing of the cross-language test scripts: arguments, stub path, the runner.

Each script is run by tests/cross_language.rs against a freshly started server, with the venv
made by scripts/test-tools.sh. Arguments fall back to environment variables so a script can also
be run by hand against any server:

    python tests/python/client_test.py --addr 127.0.0.1:50051 --stubs target/test-tools/venv/neurograph-stubs
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
    CONFIG.patterns = args.patterns
    return CONFIG


def connect():
    """A plaintext channel to the server, once it accepts connections (bounded wait)."""
    channel = grpc.insecure_channel(CONFIG.addr)
    grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_SECONDS)
    return channel


def run(module):
    """Runs every unittest.TestCase in `module`; prints `N passed, M failed`; returns the exit code."""
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite()
    for test in _flatten(loader.loadTestsFromModule(module)):
        if not CONFIG.patterns or any(p in test.id() for p in CONFIG.patterns):
            suite.addTest(test)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    # A test marked as a known bug (expectedFailure) that passes means the bug is fixed: it
    # fails the run so that the marker gets removed.
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
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


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item
