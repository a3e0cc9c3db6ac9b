# Sourced by the loadtest scripts (after their option parsing): release binaries, a work
# directory removed at exit with every background job, /proc readings of server
# processes, and nginx-rtmp started the one way every comparison uses.

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q --bin rtmp-edge --bin rtmp-load --bin rtmp-floor
BIN=target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
TCK=$(getconf CLK_TCK)

# CPU ticks (utime+stime, all threads) of the given pids.
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
# Peak RSS (VmHWM, KiB) and current RSS, summed over pids.
hwm_kib() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmHWM/{print $2}' "/proc/$p/status"))); done; echo $t; }
rss_kib() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status"))); done; echo $t; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# start_nginx PORT: nginx-rtmp (one worker, application live) on 127.0.0.1:PORT, its
# files in $WORK; sets NGINX_PIDS to its master and worker.
start_nginx() {
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 65536; }
rtmp { server { listen 127.0.0.1:$1; chunk_size 4096; application live { live on; } } }
CONF
  nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" &
  NGINX_MASTER=$!
  wait_port "$1"
  NGINX_PIDS="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
}
stop_nginx() { kill "$NGINX_MASTER"; wait "$NGINX_MASTER" 2>/dev/null || true; }
