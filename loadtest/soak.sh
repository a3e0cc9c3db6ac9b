#!/usr/bin/env bash
# Soak: MINUTES of churn against one rtmp-edge, watching for leaks.
#   loadtest/soak.sh [MINUTES] (default 10); CYCLE_SECS=15 churns four times as fast
# Every cycle (CYCLE_SECS, default 60 s): 4 rtmp-load publishers (they stop and republish next cycle) and 200
# viewers that come and go, one ffmpeg publisher restarted every cycle, every stream pushed
# to a second rtmp-edge and recorded to FLV, the API and /metrics scraped every 2 s. RSS
# and open fds are sampled every 10 s; at the end it prints the RSS slope after warm-up
# (the first quarter) in MiB and % per hour, fds against the idle baseline, and any
# warn/error log lines other than the expected ones. Everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
CYCLE=${CYCLE_SECS:-60}
[ "$CYCLE" -ge 15 ] || { echo "CYCLE_SECS must be at least 15" >&2; exit 2; }
# FEATURES=system-alloc soaks with the C library's malloc instead of mimalloc; CARGO_TARGET_DIR
# keeps such a build apart, so two soaks can run side by side.
cargo build --release -q --bin rtmp-edge --bin rtmp-load ${FEATURES:+--features "$FEATURES"}
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
A=$(free_port) B=$(free_port) HTTP=$(free_port)

"$BIN/rtmp-edge" --listen 127.0.0.1:$B --http off --http-media off --log-level warn 2>"$WORK/b.log" &
"$BIN/rtmp-edge" --listen 127.0.0.1:$A --http 127.0.0.1:$HTTP --http-media off --log-level warn \
  --record all --record-dir "$WORK/rec" --push "rtmp://127.0.0.1:$B/live" 2>"$WORK/a.log" &
APID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break; sleep 0.2; done
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine \
  -t 20 -c:v libx264 -preset ultrafast -g 50 -c:a aac -f flv "$WORK/media.flv"

rss_kib() { awk '/VmRSS/{print $2}' "/proc/$APID/status"; }
# Heap and other anonymous memory only: RSS also counts the binary's code pages, read in
# as code paths first run.
anon_kib() { awk '/RssAnon/{print $2}' "/proc/$APID/status"; }
fds() { ls "/proc/$APID/fd" | wc -l; }
IDLE_RSS=$(rss_kib) IDLE_FDS=$(fds)
echo "soak: $MINUTES min; idle RSS $((IDLE_RSS / 1024)) MiB, $IDLE_FDS fds"
echo "t_s,rss_kib,anon_kib,fds" >"$WORK/samples.csv"
END=$(( $(date +%s) + MINUTES * 60 ))
START=$(date +%s)

( # sampler: while the cycles run
  while [ ! -e "$WORK/done" ]; do
    echo "$(( $(date +%s) - START )),$(rss_kib),$(anon_kib),$(fds)" >>"$WORK/samples.csv"; sleep 10
  done ) &
( # scraper
  while [ ! -e "$WORK/done" ]; do
    curl -s "http://127.0.0.1:$HTTP/metrics" >/dev/null; curl -s "http://127.0.0.1:$HTTP/api/v1/streams" >/dev/null
    curl -s "http://127.0.0.1:$HTTP/api/v1/clients" >/dev/null; sleep 2
  done ) &
cycle=0
while [ $(( $(date +%s) + CYCLE )) -le "$END" ]; do
  cycle=$((cycle + 1))
  timeout $((CYCLE - 2)) ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$WORK/media.flv" -c copy \
    -f flv "rtmp://127.0.0.1:$A/live/ff" 2>>"$WORK/ffmpeg.log" &
  ff=$!
  "$BIN/rtmp-load" --url "rtmp://127.0.0.1:$A/live/soak" --publishers 4 --viewers 200 \
    --duration $((CYCLE - 10))s --ramp 50 --quiet --report "$WORK/cycle-$cycle.json" >/dev/null 2>>"$WORK/load.log" || true
  python3 - "$WORK/cycle-$cycle.json" "$cycle" "$(rss_kib)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); v = r["viewers"]
print(f"cycle {sys.argv[2]}: viewers {v['connected']}/{v['requested']} below95 {v['below_95pct_expected']} "
      f"failed {v['failed']}; RSS {int(sys.argv[3]) // 1024} MiB")
PY
  wait $ff 2>/dev/null || true
  sleep 5
done
touch "$WORK/done"
sleep 12 # clients gone, push grace over
END_RSS=$(rss_kib) END_FDS=$(fds)
python3 - "$WORK/samples.csv" "$IDLE_RSS" "$END_RSS" "$IDLE_FDS" "$END_FDS" <<'PY'
import csv, sys
rows = [(float(r["t_s"]), float(r["rss_kib"]), int(r["fds"]), float(r["anon_kib"])) for r in csv.DictReader(open(sys.argv[1]))]
idle_rss, end_rss, idle_fds, end_fds = map(int, sys.argv[2:6])
warm = [r for r in rows if r[0] >= rows[-1][0] / 4] if rows else []


def trend(what, col):
    import statistics
    pts = [(r[0], r[col]) for r in warm]
    n = len(pts); mx = sum(p[0] for p in pts) / n; my = sum(p[1] for p in pts) / n
    ls = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts) * 3600 / 1024
    # RSS saw-tooths with every cycle: a median-based slope is less swayed by where the
    # run happens to stop in a cycle.
    ts = statistics.median([(q[1] - p[1]) / (q[0] - p[0]) for i, p in enumerate(pts)
                            for q in pts[i + 1:] if q[0] > p[0]]) * 3600 / 1024
    print(f"{what} slope after warm-up: {ls:+.2f} MiB/h least squares, {ts:+.2f} MiB/h Theil-Sen "
          f"({100 * ls * 1024 / my:+.2f} / {100 * ts * 1024 / my:+.2f} %/h of {my / 1024:.1f} MiB mean)")
    meds = []
    for start in range(int(pts[0][0]), int(pts[-1][0]) + 1, 300):
        seg = [p[1] for p in pts if start <= p[0] < start + 300]
        if seg:
            meds.append(f"{statistics.median(seg) / 1024:.1f}")
    print(f"{what} medians per 5 min after warm-up (MiB): " + " ".join(meds))


if len(warm) >= 3:
    trend("RSS", 1)
    trend("RssAnon (heap)", 3)
print(f"RSS idle {idle_rss // 1024} MiB, under load max {max(r[1] for r in rows) // 1024:.0f} MiB, after {end_rss // 1024} MiB")
print(f"fds idle {idle_fds}, under load max {max(r[2] for r in rows)}, after {end_fds}")
PY
# Warn/error lines, minus the expected ones (clients leaving mid-write, push reconnects).
grep -E "WARN|ERROR" "$WORK/a.log" | grep -vE "peer stopped reading|push destination failed|publish ended" \
  | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sort -rn | head -10 || true
echo "recordings: $(ls "$WORK/rec" | wc -l) files; work dir $WORK"
