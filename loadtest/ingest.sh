#!/usr/bin/env bash
# Ingest cost, side by side in one run: P publishers of a synthetic stream (rtmp-load, no
# viewers) into rtmp-edge, optionally an earlier rtmp-edge build, and nginx-rtmp. Prints
# each server's CPU-seconds per GB ingested, peak and settled RSS, and the GOP bytes the
# streams hold (what a GOP cache must keep), with the ratios against nginx-rtmp. rtmp-edge
# runs with its defaults (merged reads on a shard this busy) and with every read at once.
#
#   loadtest/ingest.sh [-p PUBLISHERS] [-d SECONDS] [-b KBPS] [-g GOP_SECS] [-a] [-n] [-B DIR] [-m MS]
#     -a  publishers' keyframes in step (rtmp-load --aligned-gops): every GOP freed at once
#     -n  skip nginx
#     -B  also run the rtmp-edge binary in DIR (an earlier build: before/after in one run)
#     -m  also run rtmp-edge with --read-coalesce-ms MS (merged reads; a list: one row each)
#   EDGE_ARGS="..." adds flags to every rtmp-edge run.
set -euo pipefail
cd "$(dirname "$0")/.."

PUBS=500 DURATION=20 KBPS=1000 GOP=2 NGINX=1 BASELINE="" MERGED="" ALIGNED=""
while getopts "p:d:b:g:anB:m:" o; do
  case $o in
    p) PUBS=$OPTARG ;; d) DURATION=$OPTARG ;; b) KBPS=$OPTARG ;; g) GOP=$OPTARG ;;
    a) ALIGNED=1 ;; n) NGINX=0 ;; B) BASELINE=$OPTARG ;; m) MERGED=$OPTARG ;;
    *) sed -n 2,12p "$0"; exit 2 ;;
  esac
done

# shellcheck source=loadtest/lib.sh
. loadtest/lib.sh

# run_load NAME PORT PIDS...: one row; the row's CPU-s/GB also goes to $WORK/NAME.cpu
run_load() {
  local name=$1 port=$2; shift 2
  local c0; c0=$(cpu_ticks "$@")
  "$BIN/rtmp-load" --url "rtmp://127.0.0.1:$port/live/ingest" --publishers "$PUBS" --viewers 0 \
    --duration "${DURATION}s" --bitrate-kbps "$KBPS" --gop-secs "$GOP" --threads 2 --quiet ${ALIGNED:+--aligned-gops} \
    --report "$WORK/$name.json" >/dev/null &
  local lg=$!
  # Settled RSS: sampled at the end of the run, every stream holding a whole GOP.
  sleep "$(( DURATION * 3 / 4 ))"
  local settled; settled=$(rss_kib "$@")
  wait $lg
  local c1; c1=$(cpu_ticks "$@")
  local hwm; hwm=$(hwm_kib "$@")
  python3 - "$WORK/$name.json" "$name" "$(( c1 - c0 ))" "$TCK" "$settled" "$hwm" "$PUBS" "$KBPS" "$GOP" "$WORK" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name, ticks, tck, settled, hwm, pubs, kbps, gop, work = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9]), sys.argv[10]
cpu = ticks / tck
gb = sum(p["payload_bytes"] for p in r["publishers"]) / 1e9
failed = sum(1 for p in r["publishers"] if p["error"])
gop_mib = pubs * kbps * 1000 / 8 * gop / 2**20
per_gb = cpu / gb if gb else float("nan")
open(f"{work}/{name}.cpu", "w").write(f"{per_gb} {settled}")
print(f"{name:<12} {cpu:8.2f} {gb:7.2f} {per_gb:9.3f} {hwm/1024:9.1f} {settled/1024:10.1f} {gop_mib:8.1f} "
      f"{(settled/1024 - 32) / gop_mib if gop_mib else float('nan'):10.2f} {failed:6d}")
PY
}

printf "%s publishers x %s kbit/s, GOP %s s (%s), %s s, no viewers\n" "$PUBS" "$KBPS" "$GOP" \
  "$([ -n "$ALIGNED" ] && echo "keyframes in step" || echo "keyframes spread")" "$DURATION"
printf "%-12s %8s %7s %9s %9s %10s %8s %10s %6s\n" server cpu_s GB cpu_s/GB peak_MiB settled_MiB GOP_MiB "(set-32)/GOP" failed

PORT=19450
run_edge() {
  local label=$1 bin=$2; shift 2
  PORT=$((PORT + 1))
  # shellcheck disable=SC2086
  "$bin" --listen "127.0.0.1:$PORT" --log-level warn --http off --http-media "127.0.0.1:$((PORT + 1000))" ${EDGE_ARGS:-} "$@" \
    2>"$WORK/edge-$label.log" &
  local pid=$!
  wait_port $PORT
  run_load "$label" $PORT $pid
  kill $pid; wait $pid 2>/dev/null || true
}
if [ -n "$BASELINE" ]; then
  run_edge baseline "$BASELINE/rtmp-edge"
fi
run_edge rtmp-edge "$BIN/rtmp-edge"
# The same with every read at once (merged reads off), for the trade.
run_edge at-once "$BIN/rtmp-edge" --read-coalesce-ms 0
for m in $MERGED; do
  run_edge "merged-$m" "$BIN/rtmp-edge" --read-coalesce-ms "$m"
done

if [ "$NGINX" = 1 ] && command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ]; then
  PORT=$((PORT + 1))
  start_nginx $PORT
  # shellcheck disable=SC2086
  run_load nginx-rtmp $PORT $NGINX_PIDS
  stop_nginx
  python3 - "$WORK" <<'PY'
import os, sys
w = sys.argv[1]
n = [float(x) for x in open(f"{w}/nginx-rtmp.cpu").read().split()]
for name in ["baseline", "rtmp-edge", "at-once"] + sorted(f[:-4] for f in os.listdir(w) if f.startswith("merged-") and f.endswith(".cpu")):
    p = f"{w}/{name}.cpu"
    if os.path.exists(p):
        e = [float(x) for x in open(p).read().split()]
        print(f"{name}: CPU-s/GB {e[0] / n[0]:.2f}x nginx-rtmp's, settled RSS {e[1] / n[1]:.2f}x")
PY
fi
