#!/usr/bin/env bash
# Records real client byte streams for the seed corpus: runs the server (RTMP_EDGE_BIN,
# default target/release/rtmp-edge) on loopback with a recording proxy in front, then
# publishes with ffmpeg and GStreamer and plays with ffmpeg, rtmpdump and GStreamer.
# Writes fuzz/seeds/{server_session,client_session,handshake,chunk,tag,flv}/.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${RTMP_EDGE_BIN:-$here/../target/release/rtmp-edge}
port=${PORT:-19350}
raw=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$raw"; }
trap cleanup EXIT

"$bin" --listen 127.0.0.1:$port --http off --shards 1 --log-level warn &
pids+=($!)
sleep 1

proxy() { # name: records via port+1 until the client ends
  python3 "$here/scripts/record_proxy.py" $((port + 1)) $port "$raw" "$1" &
  proxy_pid=$!
  sleep 0.5
}
stop_proxy() { sleep 0.5; kill $proxy_pid 2>/dev/null; wait $proxy_pid 2>/dev/null; }
url=rtmp://127.0.0.1:$((port + 1))/live
direct=rtmp://127.0.0.1:$port/live

# Publishers (through the proxy).
proxy ffmpeg-pub
ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine \
  -t 3 -c:v libx264 -preset ultrafast -g 25 -c:a aac -f flv "$url/pub1" </dev/null
stop_proxy
proxy ffmpeg-pub-mp3
ffmpeg -loglevel error -re -f lavfi -i sine -t 2 -c:a libmp3lame -f flv "$url/pub2?token=abc" </dev/null
stop_proxy
proxy gst-pub
timeout 6 gst-launch-1.0 -q videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240 \
  ! openh264enc ! h264parse ! flvmux name=m streamable=true \
  ! rtmp2sink location="$url/pub3" audiotestsrc num-buffers=80 ! audioconvert ! voaacenc ! m.
stop_proxy

# A publisher straight to the server for the players to watch.
ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine \
  -t 25 -c:v libx264 -preset ultrafast -g 25 -c:a aac -f flv "$direct/x" </dev/null &
pids+=($!)
sleep 2
proxy ffmpeg-play
timeout 10 ffmpeg -loglevel error -i "$url/x" -t 2 -f null - </dev/null
stop_proxy
proxy rtmpdump-play
timeout 10 rtmpdump -q -v -r "$url/x" --stop 2 -o /dev/null
stop_proxy
proxy gst-play
timeout 4 gst-launch-1.0 -q rtmp2src location="$url/x" ! fakesink
stop_proxy
proxy ffmpeg-play-missing
timeout 5 ffmpeg -loglevel error -i "$url/nosuch" -t 1 -f null - </dev/null
stop_proxy

mkdir -p "$here"/seeds/{server_session,client_session,handshake,chunk,tag,flv}
for f in "$raw"/*.c2s "$raw"/*.s2c; do
  [ -s "$f" ] || continue
  n=$(basename "$f")
  case $n in
    *.c2s) side=server_session ;;
    *.s2c) side=client_session ;;
  esac
  # Session seeds: mode byte 0 (the capture has its own handshake), split seed 0.
  { printf '\0\0\0'; head -c 65533 "$f"; } >"$here/seeds/$side/${n%.*}"
  # Handshake seeds: the first 3073 bytes (server side: mode 0; client side: mode 1).
  if [ $side = server_session ]; then
    { printf '\0\0\0'; head -c 3073 "$f"; } >"$here/seeds/handshake/${n%.*}"
    # Chunk seeds: the chunk stream after the handshake, max message size 2^24.
    { printf '\030\0\0'; tail -c +3074 "$f" | head -c 16384; } >"$here/seeds/chunk/${n%.*}"
  else
    { printf '\1\0\0'; head -c 3073 "$f"; } >"$here/seeds/handshake/${n%.*}"
  fi
done
# FLV file and tag seeds.
ffmpeg -loglevel error -f lavfi -i testsrc2=size=64x48:rate=5 -f lavfi -i sine -t 1 \
  -c:v libx264 -c:a aac -f flv -y "$raw/a.flv" </dev/null
ffmpeg -loglevel error -f lavfi -i sine -t 1 -c:a libmp3lame -f flv -y "$raw/mp3.flv" </dev/null
for f in "$raw"/*.flv; do
  head -c 16384 "$f" >"$here/seeds/flv/$(basename "$f")"
  python3 - "$f" "$here/seeds/tag/$(basename "$f" .flv)" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
at = int.from_bytes(d[5:9], "big") + 4
n = 0
while at + 11 <= len(d) and n < 12:
    size = int.from_bytes(d[at + 1:at + 4], "big")
    body = d[at + 11:at + 11 + size]
    open(f"{sys.argv[2]}-{n}-{d[at]}", "wb").write(body[:4096])
    at += 11 + size + 4
    n += 1
PY
done
# AMF seeds: the command and data bodies in the captures; tag seeds: their media bodies.
python3 "$here/scripts/extract_messages.py" "$raw" "$here/seeds/amf" "$here/seeds/tag"
# Enhanced RTMP (FourCC) video and audio bodies ffmpeg 5 cannot produce.
e() { printf "$2" >"$here/seeds/tag/$1"; }
e ex-hevc-seq '\x90hvc1\x01\x01\x60\x00\x00\x00'
e ex-hevc-key '\x91hvc1\x00\x00\x00\x00\x00\x00\x10\x26\x01'
e ex-av1-x '\xa3av01\x12\x00'
e ex-meta '\x94hvc1\x02\x00\x0bcolorInfo\x03\x00\x00\x09'
e ex-multitrack '\x96\x00hvc1\x01\x00\x00\x00\x00'
e ex-multitrack-many '\x96\x21\x00hvc1\x00\x00\x05'
e ex-modex '\x97\x02\x00\x00\x00\x11\x91av01'
e ex-audio-opus '\x90Opus\x01\x02'
e ex-audio-multi '\x95\x00mp4a\x00\x12\x10'
# Config seeds: the README example and the unit tests' files.
mkdir -p "$here/seeds/config"
python3 - "$here/.." "$here/seeds/config" <<'PY'
import re, sys
root, out = sys.argv[1], sys.argv[2]
n = 0
for b in re.findall(r"```toml\n(.*?)```", open(f"{root}/README.md").read(), re.S):
    open(f"{out}/readme-{n}.toml", "w").write(b); n += 1
for b in re.findall(r'r#"(.*?)"#', open(f"{root}/src/config/tests.rs").read(), re.S):
    if "[" in b:
        open(f"{out}/tests-{n}.toml", "w").write(b); n += 1
PY
printf '[server]\nlisten = "127.0.0.1:1935"\n\n[[tls_certificate]]\ncert = "a.pem"\nkey = "a.key"\nnames = ["*.example.com"]\n' >"$here/seeds/config/tls.toml"
ls "$here"/seeds/* | head -200
# TLS seeds: ClientHellos (TLS 1.3 and 1.2, with and without SNI, ALPN) from Python's
# OpenSSL, preceded by the target's 2-byte split seed.
mkdir -p "$here/seeds/tls"
python3 - "$here/seeds/tls" <<'PY'
import ssl, sys
out = sys.argv[1]
for name, ver, sni, alpn in [("tls13-sni", ssl.TLSVersion.TLSv1_3, "live.example.com", None),
                             ("tls12", ssl.TLSVersion.TLSv1_2, None, None),
                             ("tls-any-alpn", None, "localhost", ["rtmp"])]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if ver:
        ctx.minimum_version = ctx.maximum_version = ver
    if alpn:
        ctx.set_alpn_protocols(alpn)
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = ctx.wrap_bio(i, o, server_hostname=sni)
    try:
        c.do_handshake()
    except ssl.SSLWantReadError:
        pass
    open(f"{out}/{name}", "wb").write(b"\0\0" + o.read())
PY
