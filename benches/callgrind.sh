#!/usr/bin/env bash
# Instructions per request of Gatehouse and of the bare-Pingora floor, counted by
# `valgrind --tool=callgrind` under the same small load. Instruction counts do not depend on
# what else the machine is doing, so this is the profile to compare builds with on a shared,
# noisy machine (docs/performance.md); wall-clock numbers come from benches/load.sh.
#
#   bash benches/callgrind.sh [BIN_DIR] [OUT_DIR]
#
# BIN_DIR (target/profiling: `cargo build --profile profiling --bin gatehouse --example
# pingora_floor`) holds `gatehouse` and `examples/pingora_floor`; OUT_DIR (a new temporary
# directory) receives floor.cg.1 / gh.cg.1 for `callgrind_annotate --inclusive=yes`. Knobs:
# SECONDS_MEASURED (15): the instrumented wrk run per process (-t1 -c8), after 3 s of
# uninstrumented warm-up; the last 1.5 s before instrumentation stops let the audit writer
# write what it queued, since that is per-request work too.
#
# Everything is on 127.0.0.1 and bounded in time; the processes are stopped on exit.
# Needs: valgrind, wrk, nginx, curl, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/profiling}
OUT=${2:-$(mktemp -d /tmp/gatehouse-callgrind.XXXXXX)}
MEASURED=${SECONDS_MEASURED:-15}
for tool in valgrind callgrind_control callgrind_annotate wrk curl jq; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is required" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $BIN/gatehouse && -x $BIN/examples/pingora_floor ]] ||
    { echo "callgrind.sh: $BIN/gatehouse or $BIN/examples/pingora_floor missing" >&2; exit 1; }
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gatehouse-cg-work.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

port() { # a free port below the ephemeral range
    local p
    for _ in $(seq 1 100); do
        p=$((10000 + RANDOM % 20000))
        ss -Htan "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
    exit 1
}
UP=$(port) FLOOR_PORT=$(port) GP=$(port) GA=$(port) GM=$(port)
wait_up() { # URL [HEADER]
    for _ in $(seq 1 300); do
        curl -fs -o /dev/null --max-time 2 ${2:+-H "$2"} "$1" && return 0
        sleep 0.2
    done
    echo "callgrind.sh: $1 did not answer" >&2
    exit 1
}

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/b; proxy_temp_path $WORK/p; fastcgi_temp_path $WORK/f;
    uwsgi_temp_path $WORK/u; scgi_temp_path $WORK/s;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$UP; location / { return 200 "ok\n"; } }
}
EOF
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_up "http://127.0.0.1:$UP/"

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/floor.cg" \
    "$BIN/examples/pingora_floor" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP" 2 2>"$OUT/floor.valgrind.log" &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")

mkdir -p "$WORK/gh"
gh_env=(env -i "PATH=$PATH" "HOME=$WORK/gh"
    "GATEHOUSE__PROXY__LISTEN=127.0.0.1:$GP" "GATEHOUSE__ADMIN__LISTEN=127.0.0.1:$GA"
    "GATEHOUSE__METRICS__LISTEN=127.0.0.1:$GM" GATEHOUSE__UPSTREAM__ALLOW_PRIVATE=true
    GATEHOUSE__LOG__LEVEL=warn GATEHOUSE__PROXY__THREADS=2)
ADMIN_TOKEN=$(cd "$WORK/gh" && timeout 60 "${gh_env[@]}" "$BIN/gatehouse" admin-token --name cg 2>/dev/null |
    grep -o 'sga_[A-Za-z0-9_-]*' | head -n 1)
(cd "$WORK/gh" && exec "${gh_env[@]}" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/gh.cg" "$BIN/gatehouse" serve) 2>"$OUT/gh.valgrind.log" &
GH_PID=$!
PIDS+=("$GH_PID")
wait_up "http://127.0.0.1:$GA/ready"
api() { # METHOD PATH [JSON]
    curl -fsS --max-time 30 -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' ${3:+--data "$3"} "http://127.0.0.1:$GA$2"
}
target=$(api POST /api/targets "{\"name\":\"cg\",\"base_url\":\"http://127.0.0.1:$UP\"}")
api POST "/api/targets/$(jq -r .id <<<"$target")/auth-methods" \
    '{"label":"b","type":"bearer","credential":"callgrind_upstream_credential"}' >/dev/null
token=$(api POST /api/tokens '{"name":"cg agent"}')
api PUT "/api/tokens/$(jq -r .id <<<"$token")/permissions/$(jq -r .id <<<"$target")" '{}' >/dev/null
AUTH="Authorization: Bearer $(jq -r .token <<<"$token")"
GH_URL="http://127.0.0.1:$GP/gateway/$(jq -r .slug <<<"$target")/"
wait_up "$GH_URL" "$AUTH"
wait_up "http://127.0.0.1:$FLOOR_PORT/"

measure() { # NAME PID URL
    timeout 30 wrk -t1 -c8 -d3s -H "$AUTH" "$3" >/dev/null
    callgrind_control -i on "$2" >/dev/null
    timeout $((MEASURED + 30)) wrk -t1 -c8 -d"${MEASURED}s" -H "$AUTH" "$3" >"$OUT/$1.wrk"
    sleep 1.5
    callgrind_control -i off "$2" >/dev/null
    callgrind_control -d "$2" >/dev/null
}
measure floor "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/"
measure gh "$GH_PID" "$GH_URL"

per_request() { # NAME
    local total requests
    total=$(callgrind_annotate "$OUT/$1.cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}')
    requests=$(awk '/requests in/ {print $1}' "$OUT/$1.wrk")
    awk -v t="$total" -v n="$requests" -v name="$1" \
        'BEGIN { printf "%-9s %14d instructions / %7d requests = %8.0f per request\n", name, t, n, t / n }'
}
echo "callgrind, wrk -t1 -c8 -d${MEASURED}s (instructions of the whole process, all threads):"
per_request floor
per_request gh
echo "profiles in $OUT (callgrind_annotate --inclusive=yes $OUT/gh.cg.1)"
