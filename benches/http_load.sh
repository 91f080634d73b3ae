#!/usr/bin/env bash
# HTTP load comparison: the `secure_api` example (full portcullis stack, JWT bearer token,
# authenticated() route) against the `bare_axum` example (same route, no security layers).
#
#   bash benches/http_load.sh
#   DURATION=30s CONNECTIONS=64 THREADS=1 ROUNDS=3 bash benches/http_load.sh
#
# Settings (environment):
#   DURATION     wrk measurement duration per run       (default 10s)
#   WARMUP       wrk warm-up duration per server         (default 2s)
#   CONNECTIONS  wrk connections                         (default 32)
#   THREADS      wrk threads                             (default 1)
#   ROUNDS       measured bare/secure pairs; odd rounds run bare first, even rounds secure
#                first (default 1; use an even number)
#   DEV_KEY_ALG  the secure server's token algorithm     (default RS256; or EdDSA)
#   BARE_TOKEN   1: bare axum receives the same requests, token header included, which it
#                ignores (default); 0: bare axum receives requests without the header
#
# Output: requests/sec of each server and the ratio secure/bare, plus each server's CPU time
# per request (user + system, from /proc), which is less sensitive to other load on a shared
# machine than requests/sec.
#
# Both servers listen on loopback only (127.0.0.1:18081 bare, 127.0.0.1:18080 secure) and are
# killed on exit. wrk, both servers and the client share the machine's cores, so the numbers
# compare the two servers under identical conditions rather than measure either in isolation.
#
# What is measured for the secure server: the whole request path of `secure_api`, *including
# its audit logging* — one JSON line per request written to stdout (the example's configuration).
# Here stdout goes to a temporary file that is deleted on exit; in production it would typically
# be a pipe to a log collector, which costs more. The secure server signs its dev tokens with an
# RS256 key (`PORTCULLIS_DEV_KEY_ALG=RS256`), so the reader token is a cached RS256 token after
# the first request, as the target says.

set -euo pipefail

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-1}"
DEV_KEY_ALG="${DEV_KEY_ALG:-RS256}"
BARE_TOKEN="${BARE_TOKEN:-1}"

# Loopback only, fixed.
HOST=127.0.0.1
SECURE_PORT=18080
BARE_PORT=18081
ROUTE=/api/me

cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk not found; installing it with apt-get" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
fi

echo "building the examples (release)..." >&2
cargo build --release --example secure_api --example bare_axum --features full >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-target}"
BIN_DIR="$TARGET_DIR/release/examples"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server for port $port exited early" >&2
            return 1
        fi
        if port_in_use "$port"; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for $HOST:$port" >&2
    return 1
}

for port in "$SECURE_PORT" "$BARE_PORT"; do
    if port_in_use "$port"; then
        echo "$HOST:$port is already in use; stop whatever listens there first" >&2
        exit 1
    fi
done

PORTCULLIS_ADDR="$HOST:$BARE_PORT" "$BIN_DIR/bare_axum" >/dev/null 2>"$WORK/bare.err" &
PIDS+=("$!")
BARE_PID=$!

# secure_api in dev mode prints READER_TOKEN=<jwt> on stdout, followed by one audit JSON line per
# request. Dev mode with the in-memory revocation store is forced (no OIDC issuer, no Redis) so
# runs are comparable whatever the calling shell exports.
env -u PORTCULLIS_ISSUER -u REDIS_URL PORTCULLIS_DEV_KEY_ALG="$DEV_KEY_ALG" \
    PORTCULLIS_ADDR="$HOST:$SECURE_PORT" "$BIN_DIR/secure_api" \
    >"$WORK/secure.out" 2>"$WORK/secure.err" &
PIDS+=("$!")
SECURE_PID=$!

TOKEN=""
for _ in $(seq 1 100); do
    TOKEN="$(sed -n 's/^READER_TOKEN=//p' "$WORK/secure.out" | head -n 1)"
    if [ -n "$TOKEN" ]; then break; fi
    if ! kill -0 "$SECURE_PID" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$TOKEN" ]; then
    echo "secure_api did not print READER_TOKEN; its stderr:" >&2
    cat "$WORK/secure.err" >&2
    exit 1
fi

wait_for_port "$BARE_PORT" "$BARE_PID"
wait_for_port "$SECURE_PORT" "$SECURE_PID"

BARE_URL="http://$HOST:$BARE_PORT$ROUTE"
# Both servers get byte-identical requests by default, so the comparison isolates the stack's
# cost from the cost of receiving a larger request (hyper parses the 700-byte header either way).
BARE_HEADER=()
if [ "$BARE_TOKEN" = 1 ]; then BARE_HEADER=("Authorization: Bearer $TOKEN"); fi
SECURE_URL="http://$HOST:$SECURE_PORT$ROUTE"

# Sanity: both answer 200 (a secure server answering 401 would make the comparison meaningless;
# wrk's non-2xx count is checked on every run as well).
check_status() {
    local url=$1 status
    shift
    local args=(-s -o /dev/null -w '%{http_code}')
    if [ $# -gt 0 ]; then args+=(-H "$1"); fi
    status="$(curl "${args[@]}" "$url")"
    if [ "$status" != 200 ]; then
        echo "$url answered $status" >&2
        return 1
    fi
}
if command -v curl >/dev/null 2>&1; then
    check_status "$BARE_URL" "${BARE_HEADER[@]}"
    check_status "$SECURE_URL" "Authorization: Bearer $TOKEN"
fi

# Server CPU time (user + system, in clock ticks) of process $1, from /proc; empty if unknown.
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true
}

# run_wrk <duration> <server pid> <url> [header]: prints "<requests/sec> <server CPU µs per
# request>"; fails on socket errors or non-2xx answers.
run_wrk() {
    local duration=$1 pid=$2 url=$3 out before after
    shift 3
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency)
    if [ $# -gt 0 ]; then args+=(-H "$1"); fi
    before="$(cpu_ticks "$pid")"
    out="$(wrk "${args[@]}" "$url")"
    after="$(cpu_ticks "$pid")"
    echo "$out" >>"$WORK/wrk.log"
    if grep -qE 'Non-2xx or 3xx responses|Socket errors' <<<"$out"; then
        echo "wrk saw errors or non-2xx responses from $url:" >&2
        echo "$out" >&2
        return 1
    fi
    awk -v b="${before:-0}" -v a="${after:-0}" -v t="$CLK_TCK" '
        /requests in/ { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        END { printf "%s %.1f\n", rps, (n > 0 && a > b) ? 1e6 * (a - b) / t / n : 0 }' <<<"$out"
}

echo "wrk -t$THREADS -c$CONNECTIONS, warm-up $WARMUP, measured $DURATION, $ROUNDS round(s)" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)" >&2
run_wrk "$WARMUP" "$BARE_PID" "$BARE_URL" "${BARE_HEADER[@]}" >/dev/null
run_wrk "$WARMUP" "$SECURE_PID" "$SECURE_URL" "Authorization: Bearer $TOKEN" >/dev/null

RATIOS=()
bare_sum=0
secure_sum=0
bare_cpu_sum=0
secure_cpu_sum=0
for round in $(seq 1 "$ROUNDS"); do
    # Alternate which server goes first (bare, secure; then secure, bare; ...), so a drift of
    # the machine's speed within a round favours neither.
    if [ $((round % 2)) -eq 1 ]; then
        read -r bare bare_cpu < <(run_wrk "$DURATION" "$BARE_PID" "$BARE_URL" "${BARE_HEADER[@]}")
        read -r secure secure_cpu < <(run_wrk "$DURATION" "$SECURE_PID" "$SECURE_URL" \
            "Authorization: Bearer $TOKEN")
    else
        read -r secure secure_cpu < <(run_wrk "$DURATION" "$SECURE_PID" "$SECURE_URL" \
            "Authorization: Bearer $TOKEN")
        read -r bare bare_cpu < <(run_wrk "$DURATION" "$BARE_PID" "$BARE_URL" "${BARE_HEADER[@]}")
    fi
    if [ -z "${bare:-}" ] || [ -z "${secure:-}" ]; then
        echo "a wrk run failed (see above)" >&2
        exit 1
    fi
    ratio="$(awk -v s="$secure" -v b="$bare" 'BEGIN {printf "%.1f", 100 * s / b}')"
    RATIOS+=("$ratio")
    printf 'round %d: bare %s req/s (%s µs CPU/req), secure %s req/s (%s µs CPU/req), secure/bare %s%%\n' \
        "$round" "$bare" "$bare_cpu" "$secure" "$secure_cpu" "$ratio"
    bare_sum="$(awk -v a="$bare_sum" -v b="$bare" 'BEGIN {print a + b}')"
    secure_sum="$(awk -v a="$secure_sum" -v b="$secure" 'BEGIN {print a + b}')"
    bare_cpu_sum="$(awk -v a="$bare_cpu_sum" -v b="$bare_cpu" 'BEGIN {print a + b}')"
    secure_cpu_sum="$(awk -v a="$secure_cpu_sum" -v b="$secure_cpu" 'BEGIN {print a + b}')"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)" >&2

audit_lines="$(grep -c '"event"' "$WORK/secure.out" || true)"
echo "latency details:" >&2
grep -E '^(Running|  [0-9]+ threads|    Latency| +50%| +99%|Requests/sec)' "$WORK/wrk.log" >&2 || true

printf 'bare_axum  requests/sec: %.2f\n' "$(awk -v s="$bare_sum" -v n="$ROUNDS" 'BEGIN {print s / n}')"
printf 'secure_api requests/sec: %.2f\n' "$(awk -v s="$secure_sum" -v n="$ROUNDS" 'BEGIN {print s / n}')"
printf 'secure/bare: %s%%\n' "$(awk -v s="$secure_sum" -v b="$bare_sum" 'BEGIN {printf "%.1f", 100 * s / b}')"
# On a shared machine single rounds swing by several points; the median of the alternated
# rounds is the figure least moved by one disturbed round.
printf 'secure/bare per round: median %s%%, min %s%%, max %s%%\n' \
    "$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')" \
    "$(printf '%s\n' "${RATIOS[@]}" | sort -n | head -n 1)" \
    "$(printf '%s\n' "${RATIOS[@]}" | sort -n | tail -n 1)"
# Server CPU per request is less sensitive than requests/sec to other load on the machine; the
# inverse ratio estimates secure/bare throughput when the servers are CPU-bound.
printf 'server CPU per request: bare %.1f µs, secure %.1f µs (bare/secure %s%%)\n' \
    "$(awk -v s="$bare_cpu_sum" -v n="$ROUNDS" 'BEGIN {print s / n}')" \
    "$(awk -v s="$secure_cpu_sum" -v n="$ROUNDS" 'BEGIN {print s / n}')" \
    "$(awk -v s="$secure_cpu_sum" -v b="$bare_cpu_sum" 'BEGIN {if (s > 0) printf "%.1f", 100 * b / s; else print "n/a"}')"
printf 'audit lines written by secure_api: %s\n' "$audit_lines"
