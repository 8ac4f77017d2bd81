#!/usr/bin/env python3
"""Holds idle and slowloris connections against an HTTP port, as a hostile client.

Opens --idle connections that never send a byte and --slow connections that send a
request head one byte every --trickle-ms, all from --source (a loopback address, so the
gateway's per-address cap applies to them and not to the test's own requests). Prints
one JSON line when they are all opened ({"event": "held", "open": N, "refused": R}:
refused = closed by the server within 300 ms), then watches for at most --watch-secs and
prints {"event": "done", "open": N, "closed_after_ms": [first, last]} and exits. Bounded:
it only ever talks to the given loopback port and stops by itself.
"""
import argparse
import json
import resource
import selectors
import socket
import sys
import time

HEAD = b"POST /v1/messages HTTP/1.1\r\nHost: tollgate\r\nx-api-key: sk-slow\r\nx-padding: " + b"a" * 4000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--source", default="127.0.0.2")
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--trickle-ms", type=int, default=500)
    ap.add_argument("--watch-secs", type=float, default=20.0)
    a = ap.parse_args()
    assert a.host.startswith("127.") and a.source.startswith("127."), "loopback only"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.idle + a.slow + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    socks = []  # (socket, slow, sent)
    for i in range(a.idle + a.slow):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((a.source, 0))
        try:
            s.connect((a.host, a.port))
        except OSError as e:
            print(json.dumps({"event": "connect_failed", "error": str(e)}), flush=True)
            s.close()
            continue
        s.setblocking(False)
        socks.append([s, i >= a.idle, 0])
    time.sleep(0.3)
    start = time.monotonic()

    def closed(s):
        try:
            data = s.recv(65536)
            return data == b"" or bool(data)  # any answer (a 408/400) ends the hold too
        except BlockingIOError:
            return False
        except OSError:
            return True

    alive = []
    refused = 0
    for entry in socks:
        if closed(entry[0]):
            refused += 1
            entry[0].close()
        else:
            alive.append(entry)
    print(json.dumps({"event": "held", "open": len(alive), "refused": refused}), flush=True)

    first = last = None
    sel = selectors.DefaultSelector()  # epoll: more than select()'s 1,024 descriptors
    for entry in alive:
        sel.register(entry[0], selectors.EVENT_READ, entry)
    next_trickle = time.monotonic()
    deadline = start + a.watch_secs
    while alive and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_trickle:
            next_trickle = now + a.trickle_ms / 1000
            for entry in alive:
                s, slow, sent = entry
                if slow and sent < len(HEAD):
                    try:
                        s.send(HEAD[sent:sent + 1])
                        entry[2] += 1
                    except OSError:
                        pass  # closed: the read side tells
        gone = []
        for key, _ in sel.select(timeout=0.05):
            if closed(key.fileobj):
                gone.append(key.data)
        if gone:
            t = int((time.monotonic() - start) * 1000)
            first = t if first is None else first
            last = t
            for entry in gone:
                sel.unregister(entry[0])
                entry[0].close()
            ids = {id(e) for e in gone}
            alive = [e for e in alive if id(e) not in ids]
    print(json.dumps({"event": "done", "open": len(alive), "closed_after_ms": [first, last]}), flush=True)
    for e in alive:
        e[0].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
