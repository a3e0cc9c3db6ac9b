#!/usr/bin/env bash
# What browsers' delivery costs, in one run: the server's CPU-seconds per GB delivered to
# V viewers of one stream over RTMP, HTTP-FLV and LL-HLS (rtmp-load's viewers of each
# kind), and what HLS packaging itself costs for 1 and S published streams without viewers
# (--hls all against --hls none: server CPU-seconds per stream-minute, RSS).
#
#   loadtest/media.sh [-v VIEWERS] [-s STREAMS] [-d SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=1000 STREAMS=100 DURATION=20
while getopts "v:s:d:" o; do
  case $o in
    v) VIEWERS=$OPTARG ;; s) STREAMS=$OPTARG ;; d) DURATION=$OPTARG ;;
    *) sed -n 2,8p "$0"; exit 2 ;;
  esac
done
# shellcheck source=loadtest/lib.sh
. loadtest/lib.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mib() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

# A real H.264/AAC stream (HLS needs a parsable SPS), ~1 Mbit/s, 2 s GOP.
ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine -t 30 \
  -c:v libx264 -preset veryfast -b:v 900k -maxrate 900k -bufsize 900k -g 60 -keyint_min 60 \
  -c:a aac -b:a 64k -f flv "$WORK/in.flv"

# start_edge ARGS...: starts a server; sets PORT, MEDIA, EDGE.
start_edge() {
  PORT=$(free_port) MEDIA=$(free_port)
  "$BIN/rtmp-edge" --listen "127.0.0.1:$PORT" --http off --http-media "127.0.0.1:$MEDIA" \
    --log-level error --stats-interval-secs 0 "$@" 2>>"$WORK/edge.log" &
  EDGE=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
}

echo "viewers of one stream, $VIEWERS each, ${DURATION}s:"
printf '%-10s %10s %10s %8s %8s %10s %12s\n' kind CPU-s/GB delivery below95 failed RSS-MiB req-p99-ms
for kind in rtmp flv ll-hls; do
  start_edge
  case $kind in
    rtmp) load=(--viewers "$VIEWERS") ;;
    flv) load=(--viewers 0 --flv-viewers "$VIEWERS") ;;
    ll-hls) load=(--viewers 0 --hls-viewers "$VIEWERS" --hls-low-latency) ;;
  esac
  c0=$(cpu_ticks "$EDGE")
  "$BIN/rtmp-load" --url "rtmp://127.0.0.1:$PORT/live/m" --input "$WORK/in.flv" --publishers 1 \
    --hls-url "http://127.0.0.1:$MEDIA" --duration "${DURATION}s" --ramp 500 --warmup-secs 3 \
    --threads 2 --quiet "${load[@]}" >"$WORK/$kind.json" 2>>"$WORK/load.log" || true
  c1=$(cpu_ticks "$EDGE") rss=$(rss_mib "$EDGE")
  kill "$EDGE"; wait "$EDGE" 2>/dev/null || true
  python3 - "$WORK/$kind.json" "$kind" $(( c1 - c0 )) "$TCK" "$rss" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); kind, ticks, tck, rss = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
v = {"rtmp": r["viewers"], "flv": r.get("flv_viewers", {}), "ll-hls": r.get("hls_viewers", {})}[kind]
dr = (r["delivery_ratio"] if kind == "rtmp" else v.get("delivery_ratio")) or {}
gb = v.get("bytes_total", 0) / 1e9
cpu = ticks / tck
req = (v.get("request_ms") or {}).get("p99")
print(f"{kind:<10} {cpu / gb if gb else float('nan'):>10.2f} {dr.get('p50', 0):>10.3f} "
      f"{v.get('below_95pct_expected', '?'):>8} {v.get('failed', '?'):>8} {rss:>10} "
      f"{req if req is not None else '-':>12}")
PY
done

echo
echo "HLS packaging, no viewers, ${DURATION}s (on: --hls all; off: --hls none):"
printf '%-8s %-4s %18s %10s\n' streams hls CPU-s/stream-min RSS-MiB
for n in 1 "$STREAMS"; do
  for mode in none all; do
    start_edge --hls "$mode"
    c0=$(cpu_ticks "$EDGE")
    "$BIN/rtmp-load" --url "rtmp://127.0.0.1:$PORT/live/p" --input "$WORK/in.flv" --publishers "$n" \
      --viewers 0 --duration "${DURATION}s" --warmup-secs 0 --quiet >/dev/null 2>>"$WORK/load.log" || true
    c1=$(cpu_ticks "$EDGE") rss=$(rss_mib "$EDGE")
    kill "$EDGE"; wait "$EDGE" 2>/dev/null || true
    python3 -c "import sys; n,t,tck,d=map(float,sys.argv[1:5]); print(f'{int(n):<8} {sys.argv[5]:<4} {t/tck/n/(d/60):>18.4f} {sys.argv[6]:>10}')" \
      "$n" $(( c1 - c0 )) "$TCK" "$DURATION" "$([ $mode = all ] && echo on || echo off)" "$rss"
  done
done
