#!/usr/bin/env bash
# The compose topology as plain processes on loopback: two seckill
# instances (each with its broker), two order workers, the gateway — on the
# real Redis and PostgreSQL already running locally — then a spike replayed
# through the gateway and every invariant audited.
#
#   deploy/run-local.sh [TRACE] [STOCK]
#
# REDIS_URL (default redis://127.0.0.1:6379) and an admin DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres) point at the
# services; a fresh database and key prefix are used per run and the
# processes are stopped at the end. Exit status: the load tester's (0 when
# the audit passed).
#
# Authentication is on, as deployed: every process refuses to start without
# its keys, so this run makes its own (random, this run only) and hands them
# to every process; the load tester signs its buyers' tokens with the
# token key, and admin calls present the admin key. One load generator
# plays every buyer from 127.0.0.1 over a few pipelined connections, so
# the per-address and per-connection limits are off here
# (GATEWAY_ADDRESS_RPS=0, GATEWAY_CONNECTION_RPS=0); the per-user and
# global limits stay on.
set -euo pipefail
cd "$(dirname "$0")/.."

TRACE=${1:-loadtest/traces/spike.ndjson}
STOCK=${2:-300}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
ADMIN_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RUN_ID="local$(date +%s)$$"
PREFIX="$RUN_ID:"
DB_NAME="$RUN_ID"
DB_URL="${ADMIN_URL%/*}/$DB_NAME"
WORK=$(mktemp -d)
BIN=target/release
random_key() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
export FLASHSALE_TOKEN_KEY FLASHSALE_ADMIN_KEY FLASHSALE_BROKER_KEY
FLASHSALE_TOKEN_KEY=$(random_key)
FLASHSALE_ADMIN_KEY=$(random_key)
FLASHSALE_BROKER_KEY=$(random_key)
ADMIN_AUTH="Authorization: Bearer $FLASHSALE_ADMIN_KEY"

cargo build --release --workspace --bins -q

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)); }
wait_healthy() {
    for _ in $(seq 1 100); do
        curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$1 never became healthy; logs in $WORK" >&2
    for log in "$WORK"/*.log; do echo "== $log" >&2; sed -n '/Stack backtrace/q;p' "$log" | grep -v " INFO " >&2; done
    exit 1
}
start() {  # name, then env assignments, then the command
    local name=$1; shift
    env "$@" >"$WORK/$name.log" 2>&1 &
    pids+=($!)
}

psql "$ADMIN_URL" -qc "CREATE DATABASE $DB_NAME" >/dev/null

S1=$(free_port); S2=$(free_port); W1=$(free_port); W2=$(free_port); G=$(free_port)
for n in 1 2; do
    port_var="S$n"; port=${!port_var}
    start "seckill-$n" REDIS_URL="$REDIS_URL" SECKILL_KEY_PREFIX="$PREFIX" \
        SECKILL_LISTEN="127.0.0.1:$port" SECKILL_NODE_ID="$n" \
        BROKER_DATA_DIR="$WORK/broker-$n" "$BIN/seckill"
done
wait_healthy "http://127.0.0.1:$S1"; wait_healthy "http://127.0.0.1:$S2"
for n in 1 2; do
    port_var="W$n"; port=${!port_var}
    start "worker-$n" REDIS_URL="$REDIS_URL" SECKILL_KEY_PREFIX="$PREFIX" DATABASE_URL="$DB_URL" \
        WORKER_LISTEN="127.0.0.1:$port" WORKER_MEMBER_ID="worker-$n" WORKER_RATE=500 \
        "$BIN/order-worker"
done
wait_healthy "http://127.0.0.1:$W1"; wait_healthy "http://127.0.0.1:$W2"
start gateway REDIS_URL="$REDIS_URL" SECKILL_KEY_PREFIX="$PREFIX" GATEWAY_LISTEN="127.0.0.1:$G" \
    GATEWAY_ADDRESS_RPS=0 GATEWAY_CONNECTION_RPS=0 \
    GATEWAY_UPSTREAMS="http://127.0.0.1:$S1,http://127.0.0.1:$S2" \
    GATEWAY_ORDER_API="http://127.0.0.1:$W1,http://127.0.0.1:$W2" "$BIN/gateway"
wait_healthy "http://127.0.0.1:$G"

# The sale: the trace's items on both instances, pre-warmed once.
items=$(grep -oE '"item":"[^"]+"' "$TRACE" | sort -u | cut -d'"' -f4)
for item in $items; do
    for port in "$S1" "$S2"; do
        curl -fsS -X POST "http://127.0.0.1:$port/admin/activities" -H 'content-type: application/json' -H "$ADMIN_AUTH" \
            -d "{\"item\":\"$item\",\"stock\":$STOCK,\"per_user_limit\":1,\"starts_at_ms\":0,\"ends_at_ms\":9999999999999}" >/dev/null
    done
    curl -fsS -X POST "http://127.0.0.1:$S1/admin/activities/$item/prewarm" -H "$ADMIN_AUTH" >/dev/null
done
# The gateway loads activities every second; the workers find both brokers
# in the registry within their refresh.
sleep 2

"$BIN/loadtest" replay --target "http://127.0.0.1:$G" "$TRACE" --quiet \
    --audit --redis-url "$REDIS_URL" --key-prefix "$PREFIX" --database-url "$DB_URL" \
    --seckill "http://127.0.0.1:$S1,http://127.0.0.1:$S2" \
    --threshold errors=0
