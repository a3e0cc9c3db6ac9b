#!/usr/bin/env python3
"""Pulls whole RTMP messages out of recorded streams (RAW_DIR/*.c2s, *.s2c): AMF command
and data bodies go to AMF_DIR (seeds for the amf target), audio/video bodies (first 4 KiB,
a few per stream) to TAG_DIR. A minimal chunk parser: enough for real clients' streams."""
import os
import sys


def messages(d):
    at = 3073  # C0C1C2 / S0S1S2
    chunk = 128
    st = {}
    while at < len(d):
        b0 = d[at]
        fmt, csid = b0 >> 6, b0 & 0x3F
        at += 1
        if csid == 0:
            csid = 64 + d[at]; at += 1
        elif csid == 1:
            csid = 64 + d[at] + 256 * d[at + 1]; at += 2
        s = st.setdefault(csid, {"len": 0, "type": 0, "buf": b"", "ext": False})
        if fmt < 3:
            ts = int.from_bytes(d[at:at + 3], "big")
            if fmt < 2:
                s["len"] = int.from_bytes(d[at + 3:at + 6], "big")
                s["type"] = d[at + 6]
            at += [11, 7, 3][fmt]
            s["ext"] = ts == 0xFFFFFF
            if s["ext"]:
                at += 4
        elif s["ext"]:
            at += 4
        n = min(chunk, s["len"] - len(s["buf"]))
        s["buf"] += d[at:at + n]
        at += n
        if len(s["buf"]) >= s["len"]:
            body, s["buf"] = s["buf"], b""
            if s["type"] == 1 and len(body) >= 4:
                chunk = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            yield s["type"], body


def main():
    raw, amf_dir, tag_dir = sys.argv[1:4]
    os.makedirs(amf_dir, exist_ok=True)
    os.makedirs(tag_dir, exist_ok=True)
    seen = set()
    for name in sorted(os.listdir(raw)):
        if not name.endswith((".c2s", ".s2c")):
            continue
        media = 0
        try:
            for t, body in messages(open(os.path.join(raw, name), "rb").read()):
                key = (t, body[:64])
                if key in seen:
                    continue
                seen.add(key)
                if t in (15, 17, 18, 20):
                    open(os.path.join(amf_dir, f"{name}-{len(seen)}-{t}"), "wb").write(body[:16384])
                elif t in (8, 9) and media < 6:
                    media += 1
                    open(os.path.join(tag_dir, f"{name}-{len(seen)}-{t}"), "wb").write(body[:4096])
        except (IndexError, KeyError):
            pass


if __name__ == "__main__":
    main()
