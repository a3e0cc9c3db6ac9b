#!/usr/bin/env bash
# What writing HLS to S3 costs, with a real S3 server (SeaweedFS's `weed mini` from
# target/test-tools, as scripts/test.sh installs it) on loopback: P publishers of a
# ~1 Mbit/s H.264/AAC stream for S seconds into a server with --hls all --hls-store s3://.
# Prints the uploader thread's CPU, uploads and bytes, the upload latency quantiles (the
# server's own histogram), the bucket's segment count against the window, and with -k a
# retention run's VOD playlist read whole by ffprobe.
#
#   loadtest/storage.sh [-p PUBLISHERS] [-s SECONDS] [-w WINDOW] [-k KEEP]
set -euo pipefail
cd "$(dirname "$0")/.."

PUBS=10 SECS=120 WINDOW=10 KEEP=""
while getopts "p:s:w:k:" o; do
  case $o in
    p) PUBS=$OPTARG ;; s) SECS=$OPTARG ;; w) WINDOW=$OPTARG ;; k) KEEP=$OPTARG ;;
    *) sed -n 2,9p "$0"; exit 2 ;;
  esac
done
WEED=${WEED:-target/test-tools/venv/bin/weed}
[ -x "$WEED" ] || { echo "no $WEED: run scripts/test.sh first" >&2; exit 1; }
cargo build --release -q --bin rtmp-edge --bin rtmp-load
BIN=target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; kill -9 "${WEED_PID:-0}" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT
TCK=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine -t 30 \
  -c:v libx264 -preset veryfast -b:v 900k -maxrate 900k -bufsize 900k -g 60 -keyint_min 60 \
  -c:a aac -b:a 64k -f flv "$WORK/in.flv"

# SeaweedFS: every port explicit, one signing identity, anonymous reads and listings.
S3=$(free_port)
cat >"$WORK/s3.json" <<EOF
{"identities":[{"name":"edge","credentials":[{"accessKey":"edgekey","secretKey":"edgesecret"}],"actions":["Admin","Read","Write","List"]},{"name":"anonymous","actions":["Read","List"]}]}
EOF
mkdir -p "$WORK/weed"
ports=()
for f in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
  s3.port.grpc admin.port admin.port.grpc; do ports+=("-$f=$(free_port)"); done
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$WEED" mini -dir="$WORK/weed" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 "${ports[@]}" -s3.port="$S3" -s3.config="$WORK/s3.json" \
  -filer.localSocket="$WORK/f.sock" -s3.localSocket="$WORK/s3.sock" -s3.port.iceberg=0 \
  -s3.port.lance=0 -webdav=false -admin.ui=false -master.telemetry=false -bucket=media \
  >"$WORK/weed.log" 2>&1 &
WEED_PID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$S3/media?list-type=2" >/dev/null && break; sleep 0.3; done

PORT=$(free_port) HTTP=$(free_port)
keep=()
[ -n "$KEEP" ] && keep=(--hls-store-keep "$KEEP")
AWS_ACCESS_KEY_ID=edgekey AWS_SECRET_ACCESS_KEY=edgesecret "$BIN/rtmp-edge" \
  --listen "127.0.0.1:$PORT" --http "127.0.0.1:$HTTP" --http-media off --log-level warn \
  --stats-interval-secs 0 --hls all --hls-window "$WINDOW" \
  --hls-store "s3://media/load?endpoint=http://127.0.0.1:$S3" "${keep[@]}" 2>"$WORK/edge.log" &
EDGE=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
storage_ticks() {
  for t in /proc/$EDGE/task/*; do
    [ "$(cat "$t/comm")" = storage ] && awk '{print $14+$15}' "$t/stat" && return
  done
  echo 0
}
c0=$(storage_ticks) e0=$(awk '{print $14+$15}' "/proc/$EDGE/stat")
"$BIN/rtmp-load" --url "rtmp://127.0.0.1:$PORT/live/s" --input "$WORK/in.flv" --publishers "$PUBS" \
  --viewers 0 --duration "${SECS}s" --warmup-secs 0 --quiet >/dev/null 2>"$WORK/load.log" || true
sleep 3 # the last segments and the VOD playlists reach the bucket
c1=$(storage_ticks) e1=$(awk '{print $14+$15}' "/proc/$EDGE/stat")
curl -s "http://127.0.0.1:$HTTP/metrics" >"$WORK/metrics"
segs=$(curl -s "http://127.0.0.1:$S3/media?list-type=2&prefix=load/live/s/seg-&max-keys=1000" | { grep -o '<Key>' || true; } | wc -l)
echo "publishers $PUBS, ${SECS}s, window $WINDOW${KEEP:+, keep $KEEP}"
python3 - "$WORK/metrics" $((c1 - c0)) $((e1 - e0)) "$TCK" "$SECS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
up, edge, tck, secs = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def total(name, **labels):
    s = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return s
print(f"uploader CPU: {up / tck:.2f} s of {edge / tck:.2f} s server CPU ({up / tck / secs * 100:.2f} % of a core)")
print(f"uploads ok {total('rtmp_storage_uploads_total', result='ok'):.0f}, retry {total('rtmp_storage_uploads_total', result='retry'):.0f}, "
      f"dropped {total('rtmp_storage_uploads_total', result='dropped'):.0f}, bytes {total('rtmp_storage_bytes_total') / 1e6:.1f} MB")
# The exported histogram: quantiles from its cumulative buckets.
buckets = {}
for line in text.splitlines():
    m = re.match(r'rtmp_storage_upload_latency_seconds_bucket\{.*le="([^"]+)".*\} (\S+)', line)
    if m:
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets[le] = buckets.get(le, 0) + float(m.group(2))
count = buckets.get(float("inf"), 0)
def q(p):
    for le in sorted(buckets):
        if buckets[le] >= p * count:
            return le
print(f"upload latency (queued -> stored), {count:.0f} objects: p50 <= {q(0.5)} s, p99 <= {q(0.99)} s")
for line in text.splitlines():
    if line.startswith("rtmp_storage_upload_latency_seconds{") and 'quantile="0.5"' in line or \
       line.startswith("rtmp_storage_upload_latency_seconds{") and 'quantile="0.99"' in line:
        print("  last 10 s:", line)
PY
listed=$(curl -s "http://127.0.0.1:$S3/media/load/live/s/media.m3u8" | { grep -c '^seg-' || true; })
echo "bucket: $segs segments of stream live/s; its final media.m3u8 lists $listed (window $WINDOW)"
if [ -n "$KEEP" ]; then
  # The publishers left: the VOD playlist lists the archive; ffprobe reads it whole.
  ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
    -show_entries format=duration -of compact \
    "http://127.0.0.1:$S3/media/load/live/s/vod.m3u8" 2>&1 | tail -3
fi
