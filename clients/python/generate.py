"""Regenerates the neurograph_client stubs from proto/neurograph/v1/*.proto.

Run it with an interpreter that has the pinned grpcio-tools (tests/python/requirements.txt;
`bash scripts/test-tools.sh` makes such a venv under target/test-tools/):

    target/test-tools/venv/bin/python clients/python/generate.py

It runs grpc_tools.protoc (--python_out, --pyi_out, --grpc_python_out) and rewrites the generated
absolute imports `from neurograph.v1 import …` to `from neurograph_client.neurograph.v1 import …`
(and the module names the classes are registered under), so the package needs no top-level
`neurograph` module and never shadows anything. The descriptors keep the proto file names
(`neurograph/v1/token.proto`), as the server's reflection serves them.

The output is committed; tests/cross_language.rs regenerates into a temporary directory
(`--out DIR`) and fails when the committed files differ, so a proto change without a rerun of
this script fails the test suite.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PACKAGE_DIR = os.path.join(HERE, "src", "neurograph_client")
# Where the generated modules live, relative to the package directory and as a module path.
PROTO_PACKAGE = ("neurograph", "v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def is_generated(name):
    return name.endswith(GENERATED_SUFFIXES)


def rewrite(text):
    """Roots the generated modules' imports and module names in neurograph_client."""
    text = re.sub(r"^from neurograph\.v1 import ", "from neurograph_client.neurograph.v1 import ",
                  text, flags=re.MULTILINE)
    return re.sub(r"BuildTopDescriptorsAndMessages\(DESCRIPTOR, 'neurograph\.v1\.",
                  "BuildTopDescriptorsAndMessages(DESCRIPTOR, 'neurograph_client.neurograph.v1.",
                  text)


def generate(out_dir):
    """Writes the rewritten stubs into out_dir/neurograph/v1/, removing stale generated files."""
    protos = sorted(
        os.path.relpath(os.path.join(root, name), PROTO_ROOT).replace(os.sep, "/")
        for root, _, names in os.walk(PROTO_ROOT)
        for name in names
        if name.endswith(".proto")
    )
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    with tempfile.TemporaryDirectory() as staging:
        # `python -m grpc_tools.protoc` adds its bundled google/protobuf/*.proto to the path.
        command = [
            sys.executable, "-m", "grpc_tools.protoc", "-I.",
            f"--python_out={staging}", f"--pyi_out={staging}", f"--grpc_python_out={staging}",
            *protos,
        ]
        code = subprocess.run(command, cwd=PROTO_ROOT, check=False).returncode
        if code != 0:
            sys.exit(f"grpc_tools.protoc failed with exit code {code}")
        source_dir = os.path.join(staging, *PROTO_PACKAGE)
        target_dir = os.path.join(out_dir, *PROTO_PACKAGE)
        os.makedirs(target_dir, exist_ok=True)
        for name in os.listdir(target_dir):
            if is_generated(name):
                os.remove(os.path.join(target_dir, name))
        written = []
        for name in sorted(os.listdir(source_dir)):
            if not is_generated(name):
                continue
            with open(os.path.join(source_dir, name), encoding="utf-8") as generated:
                text = rewrite(generated.read())
            with open(os.path.join(target_dir, name), "w", encoding="utf-8", newline="\n") as out:
                out.write(text)
            written.append(name)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=PACKAGE_DIR,
                        help="the neurograph_client package directory to write into"
                        " (default: the committed one)")
    args = parser.parse_args()
    written = generate(os.path.abspath(args.out))
    print(f"generated {len(written)} files into {os.path.join(args.out, *PROTO_PACKAGE)}")


if __name__ == "__main__":
    main()
