#!/usr/bin/env bash
# make bench: messages per second that one gateway sustains with journaling
# on, end to end (accepted, spooled with fsync, relayed and journaled to a
# counting sink), and the gateway's peak memory. Only 127.0.0.1 is used.
#
#   bench/run.sh [--messages N] [--sessions S] [--size B] [--format copy|envelope] [--reuse]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${MAILJOURNAL_BIN:-$ROOT/target/release/mailjournal}
MESSAGES=5000 SESSIONS=20 SIZE=4096 FORMAT=copy REUSE=""
while [ $# -gt 0 ]; do
    case $1 in
        --messages) MESSAGES=$2; shift 2;;
        --sessions) SESSIONS=$2; shift 2;;
        --size) SIZE=$2; shift 2;;
        --format) FORMAT=$2; shift 2;;
        --reuse) REUSE=--reuse; shift;;
        *) echo "unknown option $1" >&2; exit 2;;
    esac
done
[ -x "$BIN" ] || { echo "no binary at $BIN: run 'cargo build --release'" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d /tmp/mailjournal-bench.XXXXXX)
SMTP_PORT=$(free_port); SINK_PORT=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/mailjournal.toml" <<CONF
[server]
hostname = "bench.example.net"
listen = ["127.0.0.1:$SMTP_PORT"]
spool_dir = "$WORK/spool"
max_connections = 1000
[routing]
local_domains = ["example.com"]
internal_networks = ["127.0.0.2/32"]
inbound_next_hop = "smtp://127.0.0.1:$SINK_PORT"
outbound_next_hop = "smtp://127.0.0.1:$SINK_PORT"
[journal]
format = "$FORMAT"
report_sender = "journal-reports@example.com"
inbound = "journal@example.com"
inbound_ndr = "journal-ndr@example.com"
CONF

python3 "$HERE/smtpbench.py" sink --listen "127.0.0.1:$SINK_PORT" --status "$WORK/sink.json" &
PIDS+=($!)
RUST_LOG=warn "$BIN" serve --config "$WORK/mailjournal.toml" 2>"$WORK/gateway.log" &
GW=$!; PIDS+=($GW)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break; sleep 0.1
done

# Warm-up, then the measured run.
python3 "$HERE/smtpbench.py" load --smtp "127.0.0.1:$SMTP_PORT" --messages 200 --sessions "$SESSIONS" --size "$SIZE" $REUSE >/dev/null
sleep 1
read -r BASE_ORIG BASE_JOURNAL < <(python3 -c "import json;d=json.load(open('$WORK/sink.json'));print(d['original'],d['journal'])")
CPU0=$(awk '{print $14+$15}' /proc/$GW/stat)
LOAD=$(python3 "$HERE/smtpbench.py" load --smtp "127.0.0.1:$SMTP_PORT" --messages "$MESSAGES" --sessions "$SESSIONS" --size "$SIZE" $REUSE)
T0=$(python3 -c "import json;print(json.loads('$LOAD')['t0'])")
DEADLINE=$((SECONDS + 120))
while :; do
    read -r ORIG JOURNAL LAST < <(python3 -c "import json;d=json.load(open('$WORK/sink.json'));print(d['original'],d['journal'],d['last_monotonic'])")
    [ $((ORIG - BASE_ORIG)) -ge "$MESSAGES" ] && [ $((JOURNAL - BASE_JOURNAL)) -ge "$MESSAGES" ] && break
    [ $SECONDS -lt $DEADLINE ] || { echo "sink did not get everything: $ORIG $JOURNAL" >&2; tail "$WORK/gateway.log" >&2; exit 1; }
    sleep 0.2
done
CPU1=$(awk '{print $14+$15}' /proc/$GW/stat)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$GW/status)
TICK=$(getconf CLK_TCK)
python3 - "$MESSAGES" "$T0" "$LAST" "$((CPU1 - CPU0))" "$TICK" "$HWM" "$FORMAT" "$SESSIONS" "$SIZE" <<'PY'
import sys, json
n, t0, last, ticks, tick, hwm, fmt, sessions, size = sys.argv[1:]
n = int(n); e2e = float(last) - float(t0)
print(json.dumps({
    "messages": n, "sessions": int(sessions), "size": int(size), "format": fmt,
    "e2e_s": round(e2e, 3), "msgs_per_s": round(n / e2e, 1),
    "journal_copies_per_s": round(n / e2e, 1),
    "gateway_cpu_ms_per_msg": round(int(ticks) / int(tick) * 1000 / n, 3),
    "gateway_peak_rss_mib": round(int(hwm) / 1024, 1),
}))
PY
