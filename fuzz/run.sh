#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS_PER_TARGET (default 60) on the seed
# corpus, one at a time. Exits non-zero on any crash, leak, timeout or OOM; prints the
# executions and coverage per target. TARGETS="chunk amf" runs a subset; FUZZ_TARGET_DIR
# builds elsewhere than fuzz/target (CI, or beside a long run using other flags).
#   fuzz/run.sh [SECONDS_PER_TARGET]
set -uo pipefail
secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked || exit 1
fi
toolchain=${FUZZ_TOOLCHAIN:-+nightly}
target_dir=()
[ -n "${FUZZ_TARGET_DIR:-}" ] && target_dir=(--target-dir "$FUZZ_TARGET_DIR")

# Longest input per target: big enough for the seeds (whole captures are up to 64 KiB).
declare -A max_len=(
  [handshake]=4096 [chunk]=65536 [chunk_model]=16384 [amf]=16384
  [server_session]=65536 [client_session]=65536 [tag]=4096 [flv]=16384
  [config]=8192 [tls]=8192 [auth]=1024 [hls]=65536
)
targets=${TARGETS:-"handshake chunk chunk_model amf server_session client_session tag flv config tls auth hls"}

# Release with debug assertions: arithmetic overflow panics too.
cargo $toolchain fuzz build -O -a "${target_dir[@]}" || exit 1

status=0
summary=()
logs=${FUZZ_LOGS:-$here/logs}
mkdir -p "$logs"
for t in $targets; do
  corpus=$here/corpus/$t
  mkdir -p "$corpus" "$here/artifacts/$t"
  [ -d "$here/seeds/$t" ] && cp -n "$here/seeds/$t"/* "$corpus"/ 2>/dev/null
  log=$logs/$t.log
  echo "== $t: ${secs}s" >&2
  cargo $toolchain fuzz run -O -a "${target_dir[@]}" "$t" "$corpus" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -max_len="${max_len[$t]:-65536}" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}')
  [ -n "$execs" ] || execs=$(grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed -E 's/^#([0-9]+).*/\1/')
  cov=$(grep -aoE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  rate=$(grep -aoE 'exec/s: [0-9]+' "$log" | tail -1)
  if [ $rc -ne 0 ] || grep -aqE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|==[0-9]+== ERROR' "$log"; then
    status=1
    line="FAIL $t: rc=$rc execs=${execs:-?} ($cov) -- see $log and artifacts/$t/"
    grep -aE 'ERROR:|panicked at|SUMMARY' "$log" | head -5 >&2
  else
    line="ok   $t: execs=${execs:-?} ${rate} ${cov}"
  fi
  echo "$line" >&2
  summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
