#!/usr/bin/env bash
# Side-by-side cost of rtmp-edge and nginx-rtmp under the same load, in one run.
# Starts each server on loopback, drives it with rtmp-load (one publisher, V viewers),
# samples the server's CPU time (utime+stime of all its threads) and peak RSS, and prints
# CPU-seconds per GB delivered, peak RSS, delivery and latency.
#
#   loadtest/compare.sh [-v VIEWERS] [-d SECONDS] [-b KBPS] [-c "0 20 50 100 350"] [-n] [-t] [-f] [-T N] [-B DIR]
#     -c  rtmp-edge --write-coalesce-ms values to run (one row each)
#     -n  skip nginx
#     -T  rtmp-load worker threads (default 1; 10,000 viewers need 2 on a 2-core machine)
#     -f  also run rtmp-floor (a plain sender, same batch policy) at each coalesce value,
#         and print rtmp-edge's CPU-s/GB as a ratio of that floor
#     -t  also run every rtmp-edge row with the viewers on RTMPS (a test CA made here)
#     -B  also run the rtmp-edge binary in DIR (an earlier build: before/after in one run),
#         alternating with this build at each coalesce value
#   EDGE_ARGS="..." adds flags to every rtmp-edge run.
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=1000 DURATION=20 KBPS=1000 COALESCE="0 100" NGINX=1 RAMP=1000 BASELINE="" TLS=0 FLOOR=0
LOAD_THREADS=1
while getopts "v:d:b:c:r:ntfB:T:" o; do
  case $o in
    v) VIEWERS=$OPTARG ;; d) DURATION=$OPTARG ;; b) KBPS=$OPTARG ;;
    c) COALESCE=$OPTARG ;; r) RAMP=$OPTARG ;; n) NGINX=0 ;; B) BASELINE=$OPTARG ;;
    t) TLS=1 ;; f) FLOOR=1 ;; T) LOAD_THREADS=$OPTARG ;;
    *) sed -n 2,15p "$0"; exit 2 ;;
  esac
done

if [ "$NGINX" = 1 ] && { ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_rtmp_module.so ]; }; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx libnginx-mod-rtmp >/dev/null
fi
# shellcheck source=loadtest/lib.sh
. loadtest/lib.sh

if [ "$TLS" = 1 ]; then
  # A throwaway CA and a certificate for 127.0.0.1, for the RTMPS rows.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=load-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$WORK/ext.cnf"
  openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/ext.cnf" -out "$WORK/tls.pem" 2>/dev/null
fi

# run_load NAME PORT PIDS...: prints one table row (NAME "... rtmps ...": viewers on TLS)
run_load() {
  local name=$1 port=$2; shift 2
  local idle; idle=$(rss_kib "$@")
  local c0; c0=$(cpu_ticks "$@")
  local url="rtmp://127.0.0.1:$port/live/cmp" tls=()
  case $name in *rtmps*) url="rtmps://127.0.0.1:$port/live/cmp" tls=(--tls-ca-file "$WORK/ca.pem") ;; esac
  "$BIN/rtmp-load" --url "$url" "${tls[@]}" --viewers "$VIEWERS" \
    --duration "${DURATION}s" --bitrate-kbps "$KBPS" --ramp "$RAMP" --threads "$LOAD_THREADS" --quiet \
    --report "$WORK/$name.json" >/dev/null
  local c1; c1=$(cpu_ticks "$@")
  local hwm; hwm=$(hwm_kib "$@")
  python3 - "$WORK/$name.json" "$name" "$(( c1 - c0 ))" "$TCK" "$idle" "$hwm" "$VIEWERS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name, ticks, tck, idle, hwm, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
cpu = ticks / tck
gb = r["viewers"]["bytes_total"] / 1e9
lat = r.get("latency") or {}
v = r["viewers"]
ok = v["connected"] - v["below_95pct_expected"]
open(f"{sys.argv[1]}.cpu", "w").write(f"{cpu / gb if gb else float('nan')}")
print(f"{name:<22} {cpu:8.2f} {gb:8.2f} {cpu / gb if gb else float('nan'):10.3f} {hwm/1024:9.1f} "
      f"{(hwm - idle) / max(n, 1):9.1f} {100.0 * ok / max(n, 1):7.1f}% "
      f"{lat.get('p50_ms', float('nan')):8.1f} {lat.get('p99_ms', float('nan')):8.1f} "
      f"{r['loadgen']['cores']:6.2f}")
PY
}

printf "%s viewers x %s kbit/s for %ss (one publisher)\n" "$VIEWERS" "$KBPS" "$DURATION"
printf "%-22s %8s %8s %10s %9s %9s %8s %8s %8s %6s\n" server cpu_s GB cpu_s/GB peak_MiB KiB/view deliv lat_p50 lat_p99 lg_cpu

PORT=19350
# run_edge LABEL BINARY COALESCE_MS [tls]: one rtmp-edge row, then its own histograms
run_edge() {
  local label=$1 bin=$2 c=$3 tls=${4:-}
  PORT=$((PORT + 1))
  local plain=$PORT port=$PORT tlsargs=()
  if [ -n "$tls" ]; then
    PORT=$((PORT + 1)); port=$PORT; label="$label-rtmps"
    tlsargs=(--listen-tls "127.0.0.1:$port" --tls-cert "$WORK/tls.pem" --tls-key "$WORK/tls.key")
  fi
  "$bin" --listen "127.0.0.1:$plain" "${tlsargs[@]}" --log-level info --write-coalesce-ms "$c" \
    --stats-interval-secs 5 --http off ${EDGE_ARGS:-} 2>"$WORK/edge-$label-$c.log" &
  local pid=$!
  wait_port $port
  run_load "$label coalesce=$c" $port $pid
  kill $pid; wait $pid 2>/dev/null || true
  # The server's own per-shard histograms over the last interval (microseconds).
  grep "shard stats" "$WORK/edge-$label-$c.log" | tail -n "$(grep -c 'shard running' "$WORK/edge-$label-$c.log")" \
    | sed -E 's/.*(shard=[0-9]+).*(fwd_p50_us=[0-9]+ fwd_p99_us=[0-9]+).*(fanout_p50_us=[0-9]+ fanout_p99_us=[0-9]+).*(drops_queue_bytes=[0-9]+ drops_queue_age=[0-9]+ kicked_behind=[0-9]+).*/    \1 \2 \3 \4/' || true
}
for c in $COALESCE; do
  if [ -n "$BASELINE" ]; then
    run_edge baseline "$BASELINE/rtmp-edge" "$c"
  fi
  run_edge rtmp-edge "$BIN/rtmp-edge" "$c"
  if [ "$TLS" = 1 ]; then
    run_edge rtmp-edge "$BIN/rtmp-edge" "$c" tls
  fi
  if [ "$FLOOR" = 1 ]; then
    PORT=$((PORT + 1))
    "$BIN/rtmp-floor" --listen "127.0.0.1:$PORT" --write-coalesce-ms "$c" 2>"$WORK/floor-$c.log" &
    fpid=$!
    wait_port $PORT
    run_load "floor coalesce=$c" $PORT $fpid
    kill $fpid; wait $fpid 2>/dev/null || true
    python3 -c 'import sys; e, f = (float(open(p).read()) for p in sys.argv[1:3]); print(f"    rtmp-edge / floor at coalesce={sys.argv[3]}: {e / f:.2f}x")' \
      "$WORK/rtmp-edge coalesce=$c.json.cpu" "$WORK/floor coalesce=$c.json.cpu" "$c"
  fi
done

if [ "$NGINX" = 1 ]; then
  PORT=$((PORT + 1))
  start_nginx $PORT
  # shellcheck disable=SC2086
  run_load "nginx-rtmp (1 worker)" $PORT $NGINX_PIDS
  stop_nginx
fi
