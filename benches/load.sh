#!/usr/bin/env bash
# Bounded load run on loopback: (a) the upstream directly, (b) nginx as a reverse proxy to it,
# (f) the bare-Pingora floor (examples/pingora_floor.rs: one peer, one injected header, the same
# Pingora build and runtime), (c) Gatehouse with a bearer-credential target pointing at it, and
# the same three proxies in front of an HTTPS upstream (`*_tls`: nginx serving TLS with a
# certificate of a CA made for the run, trusted by nginx `proxy_ssl_trusted_certificate`, by the
# floor's `ca_file` and by Gatehouse's `upstream.extra_ca_file`). The scenarios are interleaved
# over ROUNDS rounds in this one run and the report gives medians over the rounds and ratios of
# those medians. Then 1 GiB is streamed through Gatehouse in each direction while its resident
# memory is sampled.
#
#   bash benches/load.sh            # from the repository root (or anywhere: it finds the root)
#
# Knobs (environment): ROUNDS (3), SCENARIOS ("direct nginx floor gatehouse direct_tls nginx_tls
# floor_tls gatehouse_tls"; `baseline` is added when BASELINE_BIN is set), BASELINE_BIN (unset:
# another Gatehouse binary, e.g. built from the commit before a change, run beside this one with
# the same plain-HTTP target and measured in the same rounds as scenario `baseline`),
# DURATION (10s), CONNS (64), THREADS (2), WARMUP (2s), C1_DURATION (5s),
# STREAM_BYTES (1G), IDLE_WAIT (12, seconds idle before the last RSS reading), SLOW_RATE (256M, curl --limit-rate of the slow-client download),
# SAMPLE_INTERVAL (0.5, seconds between VmRSS samples), SKIP_BUILD (unset: build),
# TARGET_HOST (127.0.0.1: the host in the bench target's base URL; `localhost` makes Gatehouse
# resolve a name as it would for a real API), PROFILE (release; `profiling` is the same build with symbols, for perf), PERF_DATA (unset: when
# set, `perf record` samples Gatehouse during its -c$CONNS run into that file; PERF_FREQ, PERF_ARGS),
# RESULTS_DIR (unset: when set, wrk outputs, RSS samples and the Gatehouse log are copied there),
# GATEHOUSE_EXTRA_ENV (unset: extra VAR=value words for Gatehouse, for diagnostic runs only, e.g.
# "GATEHOUSE__AUDIT__QUEUE_CAPACITY=1"; the report prints them so such a run is never mistaken
# for the default one).
#
# Everything runs as separate processes owned by this script, on 127.0.0.1, in a temporary
# directory: one nginx instance (its own prefix and config; nothing system-wide), one Python
# upload sink, one Gatehouse. All of them are stopped on exit (trap). Every wait is bounded.
# Needs: cargo, curl, jq, wrk, nginx, openssl, python3 (wrk, nginx and jq are installed with
# apt-get when missing and we are root).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
read -r -a SCENARIOS <<<"${SCENARIOS:-direct nginx floor gatehouse direct_tls nginx_tls floor_tls gatehouse_tls}"
[[ -n ${BASELINE_BIN:-} ]] && SCENARIOS+=(baseline)
has() { [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
C1_DURATION=${C1_DURATION:-5s}
STREAM_BYTES=${STREAM_BYTES:-1G}
SLOW_RATE=${SLOW_RATE:-256M}
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.5}
IDLE_WAIT=${IDLE_WAIT:-12}
TARGET_HOST=${TARGET_HOST:-127.0.0.1}
# Upper bound on one streaming transfer (curl --max-time) and on the samples taken during it.
STREAM_MAX_SECONDS=120

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT_STARTED=$SECONDS

log() { printf '[load %3ds] %s\n' "$((SECONDS - SCRIPT_STARTED))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
command -v jq >/dev/null || need_apt+=(jq)
if ((${#need_apt[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${need_apt[*]} (install them, or run as root)"
    log "installing ${need_apt[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for tool in curl python3 cargo openssl; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# ---------------------------------------------------------------------------------------------
# Processes and clean-up
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/gatehouse-load.XXXXXX)
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do # at most 5 s, then SIGKILL
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    wait 2>/dev/null || true
    if [[ -n ${RESULTS_DIR:-} ]]; then
        { mkdir -p "$RESULTS_DIR" && cp "$WORK"/*.txt "$WORK"/*.log "$RESULTS_DIR"/; } 2>/dev/null || true
    fi
    if ((status != 0)) && [[ -f $WORK/gatehouse.log ]]; then
        echo "--- last lines of the Gatehouse log ---" >&2
        tail -n 20 "$WORK/gatehouse.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Poll a URL until it answers 2xx: at most $2 tries, 0.1 s apart.
wait_http() {
    local url=$1 tries=${2:-100} i
    for ((i = 0; i < tries; i++)); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$url did not answer within $((tries / 10)) s"
}

USED_PORTS=()
# pick_port VAR: a free loopback TCP port, not handed out before by this script. Drawn below
# the kernel's ephemeral range (ip_local_port_range, usually from 32768), so that neither our own
# outgoing connections nor other programs binding port 0 can take it between the pick and the bind.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=32768
pick_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ " ${USED_PORTS[*]} " == *" $p "* ]] && continue
        ss -Htan "sport = :$p" 2>/dev/null | grep -q . && continue
        USED_PORTS+=("$p")
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
PROFILE=${PROFILE:-release}
GATEHOUSE=$ROOT/target/$PROFILE/gatehouse
FLOOR=$ROOT/target/$PROFILE/examples/pingora_floor
if [[ -z ${SKIP_BUILD:-} ]]; then
    log "cargo build --profile $PROFILE (output in $WORK/build.log)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --bin gatehouse --example pingora_floor) >"$WORK/build.log" 2>&1 ||
        { tail -n 30 "$WORK/build.log" >&2; die "cargo build --profile $PROFILE failed"; }
fi
[[ -x $GATEHOUSE ]] || die "$GATEHOUSE not found"
[[ -x $FLOOR ]] || die "$FLOOR not found"

# ---------------------------------------------------------------------------------------------
# Upstream and nginx reverse proxy (one nginx instance, two server blocks)
# ---------------------------------------------------------------------------------------------
pick_port UPSTREAM_PORT
pick_port NGINX_PROXY_PORT
pick_port SINK_PORT
pick_port FLOOR_PORT
pick_port GH_PROXY_PORT
pick_port GH_ADMIN_PORT
pick_port GH_METRICS_PORT
pick_port UPSTREAM_TLS_PORT
pick_port NGINX_TLS_PROXY_PORT
pick_port FLOOR_TLS_PORT

# A CA of this run and a certificate for localhost signed by it (EC P-256; valid two days).
TLS_DIR=$WORK/tls
mkdir -p "$TLS_DIR"
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=gatehouse-load-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$TLS_DIR/localhost.key" -out "$TLS_DIR/localhost.csr"
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature \
        extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >"$TLS_DIR/leaf.ext"
    openssl x509 -req -in "$TLS_DIR/localhost.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
        -CAcreateserial -days 2 -extfile "$TLS_DIR/leaf.ext" -out "$TLS_DIR/localhost.pem"
} >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl could not make the test CA"; }
chmod 755 "$TLS_DIR"
chmod 644 "$TLS_DIR"/*

mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp" "$WORK/www" "$WORK/gatehouse"
# nginx started as root serves with unprivileged workers (user nobody): let them reach the file.
chmod 755 "$WORK" "$WORK/www"
# A sparse file: reading it costs no disk I/O, so the transfer measures the proxies, not the disk.
truncate -s "$STREAM_BYTES" "$WORK/www/big.bin"
chmod 644 "$WORK/www/big.bin"
STREAM_SIZE=$(stat -c %s "$WORK/www/big.bin")

cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream origin {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }

    # (a) the upstream: a small fixed 200, and the 1 GiB file for the streaming test.
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        default_type text/plain;
        location = /big.bin { root $WORK/www; }
        location / { return 200 "ok\n"; }
    }

    # (b) nginx as a reverse proxy to (a), with keep-alive to the upstream.
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

    upstream origin_tls {
        server 127.0.0.1:$UPSTREAM_TLS_PORT;
        keepalive 64;
    }

    # (a') the upstream over TLS: the same small 200.
    server {
        listen 127.0.0.1:$UPSTREAM_TLS_PORT ssl;
        ssl_certificate $TLS_DIR/localhost.pem;
        ssl_certificate_key $TLS_DIR/localhost.key;
        ssl_session_cache shared:upstream_tls:1m;
        default_type text/plain;
        location / { return 200 "ok\n"; }
    }

    # (b') nginx as a reverse proxy to (a'): keep-alive, session reuse, the certificate verified.
    server {
        listen 127.0.0.1:$NGINX_TLS_PROXY_PORT;
        location / {
            proxy_pass https://origin_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_session_reuse on;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $TLS_DIR/ca.pem;
        }
    }
}
EOF
"$NGINX" -t -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >/dev/null 2>&1 ||
    { "$NGINX" -t -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" || true; die "nginx config rejected"; }
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# Upload sink: nginx answers a POST to `return 200` before it has read the body (it discards the
# body after replying) and 405s a POST to a static file, so it cannot prove that 1 GiB arrived.
# This sink reads the whole body (Content-Length or chunked) and answers with the byte count.
cat >"$WORK/sink.py" <<'EOF'
import http.server, sys

class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        received = 0
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    got = len(self.rfile.read(min(left, 1 << 20)))
                    if not got:
                        return
                    left -= got
                received += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                got = len(self.rfile.read(min(left, 1 << 20)))
                if not got:
                    return
                left -= got
                received += got
        body = f"{received}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
EOF
python3 "$WORK/sink.py" "$SINK_PORT" &
PIDS+=($!)

wait_http "http://127.0.0.1:$UPSTREAM_PORT/"
wait_http "http://127.0.0.1:$NGINX_PROXY_PORT/"
wait_http "http://127.0.0.1:$NGINX_TLS_PROXY_PORT/"
# The one worker serves both server blocks: the upstream (a) and the reverse proxy (b).
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n 1)
[[ -n $NGINX_WORKER ]] || die "no nginx worker process"

# ---------------------------------------------------------------------------------------------
# The bare-Pingora floor (as many worker threads as Gatehouse's proxy: one per core)
# ---------------------------------------------------------------------------------------------
"$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UPSTREAM_PORT" >"$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_http "http://127.0.0.1:$FLOOR_PORT/"
# The floor in front of the TLS upstream: SNI localhost, the run's CA as its connector's roots.
"$FLOOR" "127.0.0.1:$FLOOR_TLS_PORT" "127.0.0.1:$UPSTREAM_TLS_PORT" "$(nproc)" localhost "$TLS_DIR/ca.pem" \
    >"$WORK/floor-tls.log" 2>&1 &
FLOOR_TLS_PID=$!
PIDS+=("$FLOOR_TLS_PID")
wait_http "http://127.0.0.1:$FLOOR_TLS_PORT/"

# ---------------------------------------------------------------------------------------------
# Gatehouse
# ---------------------------------------------------------------------------------------------
# A clean environment: nothing from the caller's GATEHOUSE_* / DATABASE_URL leaks in.
gh_env=(
    env -i "PATH=$PATH" "HOME=$WORK/gatehouse"
    "GATEHOUSE__PROXY__LISTEN=127.0.0.1:$GH_PROXY_PORT"
    "GATEHOUSE__ADMIN__LISTEN=127.0.0.1:$GH_ADMIN_PORT"
    "GATEHOUSE__METRICS__LISTEN=127.0.0.1:$GH_METRICS_PORT"
    "GATEHOUSE__UPSTREAM__ALLOW_PRIVATE=true"
    "GATEHOUSE__LOG__LEVEL=warn"
    "GATEHOUSE__PROXY__SHUTDOWN_GRACE=2s"
)
# The run's CA, for the HTTPS target (only then: an older build may not know the key).
has gatehouse_tls && gh_env+=("GATEHOUSE__UPSTREAM__EXTRA_CA_FILE=$TLS_DIR/ca.pem")
read -r -a extra_env <<<"${GATEHOUSE_EXTRA_ENV:-}"
gh_env+=("${extra_env[@]}")
ADMIN_TOKEN=$(cd "$WORK/gatehouse" && timeout 60 "${gh_env[@]}" "$GATEHOUSE" admin-token --name load 2>>"$WORK/gatehouse.log" | grep -o 'sga_[A-Za-z0-9_-]*' | head -n 1) || true
[[ $ADMIN_TOKEN == sga_* ]] || die "gatehouse admin-token printed no sga_ token"

(cd "$WORK/gatehouse" && exec "${gh_env[@]}" "$GATEHOUSE" serve) >>"$WORK/gatehouse.log" 2>&1 &
GH_PID=$!
PIDS+=("$GH_PID")
wait_http "http://127.0.0.1:$GH_PROXY_PORT/health" 300
wait_http "http://127.0.0.1:$GH_ADMIN_PORT/ready" 100
RSS_START=$(rss_kb "$GH_PID")

ADMIN="http://127.0.0.1:$GH_ADMIN_PORT"
api() { # api METHOD PATH [JSON], on the instance named by $ADMIN and $ADMIN_TOKEN
    local args=(-fsS --max-time 10 -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN")
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    curl "${args[@]}" "$ADMIN$2"
}
UPSTREAM_CREDENTIAL="bench_upstream_credential_$RANDOM$RANDOM"
target_json=$(api POST /api/targets "{\"name\":\"bench upstream\",\"base_url\":\"http://$TARGET_HOST:$UPSTREAM_PORT\"}")
TARGET_ID=$(jq -r .id <<<"$target_json")
SLUG=$(jq -r .slug <<<"$target_json")
api POST "/api/targets/$TARGET_ID/auth-methods" \
    "{\"label\":\"bench\",\"type\":\"bearer\",\"credential\":\"$UPSTREAM_CREDENTIAL\"}" >/dev/null
sink_json=$(api POST /api/targets "{\"name\":\"bench sink\",\"base_url\":\"http://127.0.0.1:$SINK_PORT\"}")
SINK_ID=$(jq -r .id <<<"$sink_json")
SINK_SLUG=$(jq -r .slug <<<"$sink_json")
api POST "/api/targets/$SINK_ID/auth-methods" \
    "{\"label\":\"bench\",\"type\":\"bearer\",\"credential\":\"$UPSTREAM_CREDENTIAL\"}" >/dev/null
tls_json=$(api POST /api/targets "{\"name\":\"bench tls\",\"base_url\":\"https://localhost:$UPSTREAM_TLS_PORT\"}")
TLS_ID=$(jq -r .id <<<"$tls_json")
TLS_SLUG=$(jq -r .slug <<<"$tls_json")
api POST "/api/targets/$TLS_ID/auth-methods" \
    "{\"label\":\"bench\",\"type\":\"bearer\",\"credential\":\"$UPSTREAM_CREDENTIAL\"}" >/dev/null
token_json=$(api POST /api/tokens '{"name":"bench agent"}')
AGENT_TOKEN=$(jq -r .token <<<"$token_json")
TOKEN_ID=$(jq -r .id <<<"$token_json")
api PUT "/api/tokens/$TOKEN_ID/permissions/$TARGET_ID" '{}' >/dev/null
api PUT "/api/tokens/$TOKEN_ID/permissions/$SINK_ID" '{}' >/dev/null
api PUT "/api/tokens/$TOKEN_ID/permissions/$TLS_ID" '{}' >/dev/null
[[ $AGENT_TOKEN == sg_* ]] || die "POST /api/tokens returned no sg_ token"
AUTH="Authorization: Bearer $AGENT_TOKEN"

# The change reaches the proxy's snapshot after the change feed's burst settles: poll (≤ 5 s).
GH_URL="http://127.0.0.1:$GH_PROXY_PORT/gateway/$SLUG/"
for ((i = 0; i < 50; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "$AUTH" "$GH_URL") == 200 ]] && break
    sleep 0.1
done
body=$(curl -fsS --max-time 2 -H "$AUTH" "$GH_URL") || die "$GH_URL does not answer 200"
[[ $body == ok ]] || die "unexpected body through Gatehouse: $body"
GH_TLS_URL="http://127.0.0.1:$GH_PROXY_PORT/gateway/$TLS_SLUG/"
if has gatehouse_tls; then
    body=$(curl -sS --max-time 5 -H "$AUTH" "$GH_TLS_URL") || die "$GH_TLS_URL does not answer"
    [[ $body == ok ]] || die "unexpected body through Gatehouse to the TLS upstream: $body"
fi

# The agent token each scenario sends (the baseline instance has its own).
declare -A AUTH_OF=()
declare -A PROXY_PID=([floor]="$FLOOR_PID" [floor_tls]="$FLOOR_TLS_PID")
BL_URL=
if [[ -n ${BASELINE_BIN:-} ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
    pick_port BL_PROXY_PORT
    pick_port BL_ADMIN_PORT
    pick_port BL_METRICS_PORT
    mkdir -p "$WORK/baseline"
    bl_env=(
        env -i "PATH=$PATH" "HOME=$WORK/baseline"
        "GATEHOUSE__PROXY__LISTEN=127.0.0.1:$BL_PROXY_PORT"
        "GATEHOUSE__ADMIN__LISTEN=127.0.0.1:$BL_ADMIN_PORT"
        "GATEHOUSE__METRICS__LISTEN=127.0.0.1:$BL_METRICS_PORT"
        "GATEHOUSE__UPSTREAM__ALLOW_PRIVATE=true"
        "GATEHOUSE__LOG__LEVEL=warn"
        "GATEHOUSE__PROXY__SHUTDOWN_GRACE=2s"
        "${extra_env[@]}"
    )
    BL_ADMIN_TOKEN=$(cd "$WORK/baseline" && timeout 60 "${bl_env[@]}" "$BASELINE_BIN" admin-token --name load 2>>"$WORK/baseline.log" | grep -o 'sga_[A-Za-z0-9_-]*' | head -n 1) || true
    [[ $BL_ADMIN_TOKEN == sga_* ]] || die "the baseline's admin-token printed no sga_ token"
    (cd "$WORK/baseline" && exec "${bl_env[@]}" "$BASELINE_BIN" serve) >>"$WORK/baseline.log" 2>&1 &
    BL_PID=$!
    PIDS+=("$BL_PID")
    PROXY_PID[baseline]=$BL_PID
    wait_http "http://127.0.0.1:$BL_PROXY_PORT/health" 300
    wait_http "http://127.0.0.1:$BL_ADMIN_PORT/ready" 100
    bl_target=$(ADMIN="http://127.0.0.1:$BL_ADMIN_PORT" ADMIN_TOKEN=$BL_ADMIN_TOKEN \
        api POST /api/targets "{\"name\":\"bench upstream\",\"base_url\":\"http://$TARGET_HOST:$UPSTREAM_PORT\"}")
    bl_target_id=$(jq -r .id <<<"$bl_target")
    ADMIN="http://127.0.0.1:$BL_ADMIN_PORT" ADMIN_TOKEN=$BL_ADMIN_TOKEN api POST "/api/targets/$bl_target_id/auth-methods" \
        "{\"label\":\"bench\",\"type\":\"bearer\",\"credential\":\"$UPSTREAM_CREDENTIAL\"}" >/dev/null
    bl_token=$(ADMIN="http://127.0.0.1:$BL_ADMIN_PORT" ADMIN_TOKEN=$BL_ADMIN_TOKEN api POST /api/tokens '{"name":"bench agent"}')
    ADMIN="http://127.0.0.1:$BL_ADMIN_PORT" ADMIN_TOKEN=$BL_ADMIN_TOKEN \
        api PUT "/api/tokens/$(jq -r .id <<<"$bl_token")/permissions/$bl_target_id" '{}' >/dev/null
    AUTH_OF[baseline]="Authorization: Bearer $(jq -r .token <<<"$bl_token")"
    BL_URL="http://127.0.0.1:$BL_PROXY_PORT/gateway/$(jq -r .slug <<<"$bl_target")/"
    for ((i = 0; i < 50; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "${AUTH_OF[baseline]}" "$BL_URL") == 200 ]] && break
        sleep 0.1
    done
    body=$(curl -fsS --max-time 2 -H "${AUTH_OF[baseline]}" "$BL_URL") || die "$BL_URL does not answer 200"
    log "baseline Gatehouse ($BASELINE_BIN) pid $BL_PID ready"
fi
sleep 1 # let the first audit batch and the snapshot reload settle before measuring idle memory
RSS_IDLE=$(rss_kb "$GH_PID")
LOG_LINES_BEFORE=$(wc -l <"$WORK/gatehouse.log")
log "Gatehouse pid $GH_PID ready: idle VmRSS $(mb "$RSS_IDLE") MB (at start $(mb "$RSS_START") MB)"

# ---------------------------------------------------------------------------------------------
# Load runs
# ---------------------------------------------------------------------------------------------
# wrk latency as milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

declare -A RPS P50 P99 NON2XX ERRS CONNS_CLOSED REQS CPU_NGINX CPU_PROXY US_NGINX US_PROXY
# The proxy process whose CPU each scenario measures is PROXY_PID[scenario] (above), Gatehouse
# for the others (it idles there).
# CPU time (user + system, all threads) of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
per_req() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }'; }
# Sockets to or from an upstream port in TIME-WAIT: the rise over a run counts the upstream
# connections that were closed during it, i.e. how much a proxy reconnects instead of reusing.
time_wait() {
    ss -Htan state time-wait "( sport = :$UPSTREAM_PORT or dport = :$UPSTREAM_PORT or sport = :$UPSTREAM_TLS_PORT or dport = :$UPSTREAM_TLS_PORT )" 2>/dev/null | wc -l
}
# run_wrk KEY URL THREADS CONNS DURATION; KEY is scenario/cCONNS/round.
run_wrk() {
    local key=$1 url=$2 t=$3 c=$4 d=$5 out tw cn cg
    tw=$(time_wait)
    cn=$(cpu_ticks "$NGINX_WORKER")
    local proxy_pid=${PROXY_PID[${key%%/*}]:-$GH_PID}
    local auth=${AUTH_OF[${key%%/*}]:-$AUTH}
    cg=$(cpu_ticks "$proxy_pid")
    local perf_pid=
    if [[ -n ${PERF_DATA:-} && $key == gatehouse/c$CONNS/1 ]]; then
        perf record -q -F "${PERF_FREQ:-997}" ${PERF_ARGS:-} -o "$PERF_DATA" -p "$GH_PID" 2>/dev/null &
        perf_pid=$!
    fi
    out=$(timeout 60 wrk -t"$t" -c"$c" -d"$d" --latency -H "$auth" "$url")
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    CPU_NGINX[$key]=$(($(cpu_ticks "$NGINX_WORKER") - cn))
    CPU_PROXY[$key]=$(($(cpu_ticks "$proxy_pid") - cg))
    CONNS_CLOSED[$key]=$(($(time_wait) - tw))
    REQS[$key]=$(awk '/requests in/ {print $1; exit}' <<<"$out")
    US_NGINX[$key]=$(per_req "${CPU_NGINX[$key]}" "${REQS[$key]}")
    US_PROXY[$key]=$(per_req "${CPU_PROXY[$key]}" "${REQS[$key]}")
    echo "$out" >"$WORK/wrk-${key//\//-}.txt"
    RPS[$key]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    NON2XX[$key]=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
    NON2XX[$key]=${NON2XX[$key]:-0}
    ERRS[$key]=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print}' <<<"$out")
    ERRS[$key]=${ERRS[$key]:-none}
    log "$key: ${RPS[$key]} req/s, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms, proxy CPU ${US_PROXY[$key]} us/req, non-2xx ${NON2XX[$key]}, socket errors ${ERRS[$key]}, upstream connections closed ${CONNS_CLOSED[$key]}"
}

declare -A URL=(
    [direct]="http://127.0.0.1:$UPSTREAM_PORT/"
    [nginx]="http://127.0.0.1:$NGINX_PROXY_PORT/"
    [floor]="http://127.0.0.1:$FLOOR_PORT/"
    [gatehouse]="$GH_URL"
    [direct_tls]="https://localhost:$UPSTREAM_TLS_PORT/"
    [nginx_tls]="http://127.0.0.1:$NGINX_TLS_PROXY_PORT/"
    [floor_tls]="http://127.0.0.1:$FLOOR_TLS_PORT/"
    [gatehouse_tls]="$GH_TLS_URL"
    [baseline]="$BL_URL"
)
for s in "${SCENARIOS[@]}"; do
    [[ -n ${URL[$s]:-} ]] || die "unknown scenario $s (known: ${!URL[*]})"
done
# Round after round, every scenario once: a slow phase of the machine hits them all alike.
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${SCENARIOS[@]}"; do
        if ((round == 1)); then
            log "$s: warm-up $WARMUP"
            timeout 30 wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "${AUTH_OF[$s]:-$AUTH}" "${URL[$s]}" >/dev/null
        fi
        log "round $round/$ROUNDS, $s: -t$THREADS -c$CONNS -d$DURATION, then -t1 -c1 -d$C1_DURATION"
        run_wrk "$s/c$CONNS/$round" "${URL[$s]}" "$THREADS" "$CONNS" "$DURATION"
        if [[ $s == gatehouse ]]; then
            RSS_AFTER_LOAD=$(rss_kb "$GH_PID")
            HWM_LOAD=$(hwm_kb "$GH_PID")
        fi
        run_wrk "$s/c1/$round" "${URL[$s]}" 1 1 "$C1_DURATION"
    done
done
LOG_LINES_AFTER=$(wc -l <"$WORK/gatehouse.log")
sleep 1 # let the audit writer drain
METRICS=$(curl -fsS --max-time 5 "http://127.0.0.1:$GH_METRICS_PORT/metrics" || true)
AUDIT_DROPPED=$(awk '/^gatehouse_audit_dropped_total/ {print $2}' <<<"$METRICS")
REQUESTS_2XX=$(awk -v s="$SLUG" '/^gatehouse_requests_total/ && index($0, "target=\"" s "\"") && /status="2xx"/ {print $2}' <<<"$METRICS")

# ---------------------------------------------------------------------------------------------
# Streaming: 1 GiB each way through Gatehouse, VmRSS sampled every SAMPLE_INTERVAL s
# ---------------------------------------------------------------------------------------------
# stream NAME CURL-ARGS…: runs curl in the background, samples VmRSS of Gatehouse until curl
# ends (at most STREAM_MAX_SECONDS), and records the peak sample and VmHWM (the kernel's exact
# peak since the counter was reset right before the transfer).
declare -A S_RESULT S_PEAK S_HWM S_SAMPLES S_BEFORE
stream() {
    local name=$1 pid peak=0 rss n=0 max_samples out=/dev/null
    shift
    # Keep the (tiny) answer of the upload sink: it is the byte count that arrived upstream.
    [[ $name == upload ]] && out=$WORK/body-upload.txt
    max_samples=$(awk -v m="$STREAM_MAX_SECONDS" -v i="$SAMPLE_INTERVAL" 'BEGIN { printf "%d", m / i + 10 }')
    S_BEFORE[$name]=$(rss_kb "$GH_PID")
    echo 5 >"/proc/$GH_PID/clear_refs" 2>/dev/null || true # reset VmHWM to the current RSS
    curl -sS --max-time "$STREAM_MAX_SECONDS" -o "$out" -H "$AUTH" \
        -w '%{http_code} %{size_download} %{size_upload} %{speed_download} %{speed_upload} %{time_total}' \
        "$@" >"$WORK/stream-$name.txt" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && ((n < max_samples)); do
        rss=$(rss_kb "$GH_PID")
        if ((rss > peak)); then peak=$rss; fi
        echo "$rss" >>"$WORK/rss-$name.txt"
        n=$((n + 1))
        sleep "$SAMPLE_INTERVAL"
    done
    wait "$pid" || true
    S_RESULT[$name]=$(cat "$WORK/stream-$name.txt")
    S_PEAK[$name]=$peak
    S_HWM[$name]=$(hwm_kb "$GH_PID")
    S_SAMPLES[$name]=$n
    log "$name: curl '${S_RESULT[$name]}' (code bytes_down bytes_up B/s_down B/s_up seconds); peak sampled VmRSS $(mb "$peak") MB over $n samples, VmHWM $(mb "${S_HWM[$name]}") MB"
}

log "streaming $STREAM_SIZE bytes: direct download (reference), then through Gatehouse"
# Read the file once so that every download below is served from the page cache alike (the
# first read of a sparse file still fills the cache, which made the first transfer slower).
cat "$WORK/www/big.bin" >/dev/null
curl -sS --max-time "$STREAM_MAX_SECONDS" -o /dev/null -w '%{http_code} %{size_download} %{speed_download} %{time_total}' \
    "http://127.0.0.1:$UPSTREAM_PORT/big.bin" >"$WORK/stream-direct.txt" 2>&1 || true
DIRECT_DOWNLOAD=$(cat "$WORK/stream-direct.txt")
stream download "http://127.0.0.1:$GH_PROXY_PORT/gateway/$SLUG/big.bin"
stream download_slow --limit-rate "$SLOW_RATE" "http://127.0.0.1:$GH_PROXY_PORT/gateway/$SLUG/big.bin"
# -T streams the file from disk (--data-binary @file would first read all of it into curl's
# memory); -X POST makes it a POST; an empty Expect header skips the 100-continue round trip.
stream upload -X POST -T "$WORK/www/big.bin" -H 'Expect:' -H 'Content-Type: application/octet-stream' \
    "http://127.0.0.1:$GH_PROXY_PORT/gateway/$SINK_SLUG/upload"
SINK_RECEIVED=$(cat "$WORK/body-upload.txt" 2>/dev/null || echo '?')
RSS_END=$(rss_kb "$GH_PID")
# Idle again after all of the above: Gatehouse gives freed heap back when it has had no request
# in flight at one of its 10 s ticks (src/memory.rs), so wait a little longer than that.
log "idle for $IDLE_WAIT s, then VmRSS again"
sleep "$IDLE_WAIT"
RSS_IDLE_AFTER=$(rss_kb "$GH_PID")
RSS_PARTS_AFTER=$(awk '/^(RssAnon|RssFile|RssShmem):/ {printf "%s %.1f MB  ", $1, $2 / 1024}' "/proc/$GH_PID/status" 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
# median NUMBERS…: the middle one (the mean of the two middle ones for an even count).
median() {
    printf '%s\n' "$@" | grep -E '^[-+0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# med ARRAY SCENARIO cN: the median over the rounds of ARRAY[SCENARIO/cN/round].
med() {
    local -n values=$1
    local r picked=()
    for ((r = 1; r <= ROUNDS; r++)); do picked+=("${values[$2/$3/$r]:-}"); done
    median "${picked[@]}"
}
total() {
    local -n values=$1
    local r sum=0
    for ((r = 1; r <= ROUNDS; r++)); do sum=$((sum + ${values[$2/$3/$r]:-0})); done
    echo "$sum"
}
joined() {
    local -n values=$1
    local r
    for ((r = 1; r <= ROUNDS; r++)); do echo "${values[$2/$3/$r]:-}"; done | sort -u | paste -sd ';'
}
per_round_ratio() {
    local -n values=$1
    local r out=()
    for ((r = 1; r <= ROUNDS; r++)); do out+=("$(ratio "${values[$2/$4/$r]:-0}" "${values[$3/$4/$r]:-0}")"); done
    echo "${out[*]}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }
mib_s() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

{
    echo
    echo "== Gatehouse load run ($(date -u +%Y-%m-%dT%H:%M:%SZ)) =="
    echo "machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr)"
    echo "commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)')"
    echo "load 1/5/15 min at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "NOTE: wrk, nginx, the upstream and Gatehouse all share these $(nproc) cores on loopback;"
    echo "      absolute numbers are a lower bound and the ratios are what to compare. Other"
    echo "      processes on the machine (e.g. concurrent cargo builds) also compete for the cores."
    echo
    echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency (after a $WARMUP warm-up), and -t1 -c1 -d$C1_DURATION --latency;"
    echo "$ROUNDS rounds, the scenarios interleaved in each; every figure is the median over the rounds:"
    printf '%-14s %6s %12s %10s %10s %9s %9s %8s %9s  %s\n' scenario conns "requests/s" "p50 ms" "p99 ms" "proxy us" "nginx us" non-2xx "upstr.cl." "socket errors"
    for c in "c$CONNS" c1; do
        for s in "${SCENARIOS[@]}"; do
            printf '%-14s %6s %12s %10s %10s %9s %9s %8s %9s  %s\n' "$s" "${c#c}" "$(med RPS "$s" "$c")" \
                "$(med P50 "$s" "$c")" "$(med P99 "$s" "$c")" "$(med US_PROXY "$s" "$c")" "$(med US_NGINX "$s" "$c")" \
                "$(total NON2XX "$s" "$c")" "$(total CONNS_CLOSED "$s" "$c")" "$(joined ERRS "$s" "$c")"
        done
    done
    echo "(proxy us / nginx us = CPU time per request, user+system from /proc/PID/stat, of the proxy"
    echo " process of the scenario (Gatehouse idles in the others) and of the one nginx worker, which"
    echo " serves the upstreams too; non-2xx and upstr.cl. are totals over the rounds; upstr.cl. ="
    echo " upstream connections closed, counted from TIME-WAIT sockets; 0 = all kept alive; only"
    echo " roughly: TIME-WAIT sockets of earlier runs expire during a run, even below zero)"
    echo
    if has baseline; then
        for c in "c$CONNS" c1; do
            echo "this Gatehouse / the baseline ($BASELINE_BIN) at ${c#c} connection(s):" \
                "CPU per request $(ratio "$(med US_PROXY gatehouse "$c")" "$(med US_PROXY baseline "$c")")," \
                "rps $(ratio "$(med RPS gatehouse "$c")" "$(med RPS baseline "$c")")," \
                "p99 $(ratio "$(med P99 gatehouse "$c")" "$(med P99 baseline "$c")");" \
                "baseline / floor CPU $(ratio "$(med US_PROXY baseline "$c")" "$(med US_PROXY floor "$c")")," \
                "rps $(ratio "$(med RPS baseline "$c")" "$(med RPS floor "$c")")"
        done
        echo
    fi
    for suffix in "" _tls; do
        has "gatehouse$suffix" && has "floor$suffix" && has "nginx$suffix" || continue
        g=gatehouse$suffix f=floor$suffix n=nginx$suffix d=direct$suffix
        for c in "c$CONNS" c1; do
            echo "${suffix:+TLS upstream, }at ${c#c} connection(s) (medians; ratios of the medians):"
            echo "  Gatehouse / floor:  CPU per request $(ratio "$(med US_PROXY $g "$c")" "$(med US_PROXY $f "$c")") (target <= 1.15)," \
                "rps $(ratio "$(med RPS $g "$c")" "$(med RPS $f "$c")") (target >= 0.9)," \
                "p50 $(ratio "$(med P50 $g "$c")" "$(med P50 $f "$c")"), p99 $(ratio "$(med P99 $g "$c")" "$(med P99 $f "$c")")" \
                "(p99 $(minus "$(med P99 $g "$c")" "$(med P99 $f "$c")") ms; target <= +1 ms)"
            echo "  per round, Gatehouse/floor CPU: $(per_round_ratio US_PROXY $g $f "$c"); rps: $(per_round_ratio RPS $g $f "$c")"
            echo "  Gatehouse CPU above the floor: $(minus "$(med US_PROXY $g "$c")" "$(med US_PROXY $f "$c")") us/request"
            echo "  Gatehouse / nginx:  rps $(ratio "$(med RPS $g "$c")" "$(med RPS $n "$c")")${suffix:+ (target >= 1.0)}," \
                "p99 $(ratio "$(med P99 $g "$c")" "$(med P99 $n "$c")")"
            if has "$d"; then
                echo "  nginx as proxy: ~$(minus "$(med US_NGINX $n "$c")" "$(med US_NGINX $d "$c")") us/request of worker CPU" \
                    "(its CPU in $n minus the upstream's share measured in $d)"
                echo "  rps / direct:       Gatehouse $(ratio "$(med RPS $g "$c")" "$(med RPS $d "$c")"), nginx $(ratio "$(med RPS $n "$c")" "$(med RPS $d "$c")")"
                echo "  added p50 / p99 over direct: Gatehouse $(minus "$(med P50 $g "$c")" "$(med P50 $d "$c")") / $(minus "$(med P99 $g "$c")" "$(med P99 $d "$c")") ms," \
                    "nginx $(minus "$(med P50 $n "$c")" "$(med P50 $d "$c")") / $(minus "$(med P99 $n "$c")" "$(med P99 $d "$c")") ms"
            fi
        done
    done
    echo
    echo "Gatehouse during the load: gatehouse_requests_total{target=\"$SLUG\",status=\"2xx\"} ${REQUESTS_2XX:-?}," \
        "gatehouse_audit_dropped_total ${AUDIT_DROPPED:-?}, log lines written during the runs: $((LOG_LINES_AFTER - LOG_LINES_BEFORE))"
    if ((LOG_LINES_AFTER > LOG_LINES_BEFORE)); then
        echo "  those log lines, without timestamps, most frequent first:"
        sed -n "$((LOG_LINES_BEFORE + 1)),${LOG_LINES_AFTER}p" "$WORK/gatehouse.log" |
            sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9T:.-]+Z +//' | sort | uniq -c | sort -rn | head -n 5 | cut -c1-200 |
            sed 's/^/    /'
    fi
    if [[ -n ${GATEHOUSE_EXTRA_ENV:-} ]]; then
        echo "  DIAGNOSTIC RUN with extra Gatehouse settings: $GATEHOUSE_EXTRA_ENV"
    fi
    echo
    echo "Gatehouse memory (VmRSS):"
    echo "  at start (listening, empty):        $(mb "$RSS_START") MB"
    echo "  idle (2 targets, 1 token, before load): $(mb "$RSS_IDLE") MB"
    echo "  right after the -c$CONNS run:           $(mb "$RSS_AFTER_LOAD") MB (VmHWM so far $(mb "$HWM_LOAD") MB)"
    echo "  after the streaming below:           $(mb "$RSS_END") MB"
    echo "  idle again, ${IDLE_WAIT} s later:             $(mb "$RSS_IDLE_AFTER") MB ($RSS_PARTS_AFTER)"
    echo
    echo "Streaming $STREAM_SIZE bytes (VmRSS sampled every ${SAMPLE_INTERVAL}s; VmHWM = exact peak, reset before each transfer):"
    read -r dcode dbytes dspeed dtime <<<"$DIRECT_DOWNLOAD"
    echo "  direct download (no proxy):  HTTP $dcode, $dbytes bytes, $(mib_s "$dspeed") MiB/s, ${dtime}s"
    for name in download download_slow upload; do
        read -r code down up sdown sup t <<<"${S_RESULT[$name]}"
        case $name in
            download) what="download via Gatehouse:     " bytes=$down speed=$sdown ;;
            download_slow) what="download, client at $SLOW_RATE/s:" bytes=$down speed=$sdown ;;
            upload) what="upload (POST) via Gatehouse:" bytes="$up (sink received $SINK_RECEIVED)" speed=$sup ;;
        esac
        echo "  $what HTTP $code, $bytes bytes, $(mib_s "$speed") MiB/s, ${t}s;" \
            "RSS before $(mb "${S_BEFORE[$name]}") MB, peak sampled $(mb "${S_PEAK[$name]}") MB (${S_SAMPLES[$name]} samples), VmHWM $(mb "${S_HWM[$name]}") MB"
    done
    echo
    echo "script wall time: $((SECONDS - SCRIPT_STARTED)) s"
}
