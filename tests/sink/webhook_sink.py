"""A webhook receiver for the request log's export tests: logs each POST (path,
headers, body) as one JSON line; the first --fail-first POSTs to a path ending in
/flaky are answered 503, as a sink that is down for a moment.

For the guardrail tests it is also a Presidio-shaped analyzer: a POST to a path ending
in /analyze with {"text"} is answered with every "John Smith" in it as
[{"entity_type": "PERSON", "start", "end", "score"}] (character offsets, as Presidio
counts them); a path ending in /slow answers the same after two seconds."""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"failed": 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode("utf-8", "replace")
            with LOCK:
                if self.path.endswith("/flaky") and STATE["failed"] < args.fail_first:
                    STATE["failed"] += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                with open(args.log, "a") as f:
                    f.write(json.dumps({"path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body}) + "\n")
            answer = b'{"errors":false}'
            if self.path.endswith("/analyze") or self.path.endswith("/slow"):
                if self.path.endswith("/slow"):
                    time.sleep(2)
                text = json.loads(body).get("text", "")
                found, at = [], text.find("John Smith")
                while at >= 0:
                    found.append({"entity_type": "PERSON", "start": at, "end": at + 10, "score": 0.85})
                    at = text.find("John Smith", at + 1)
                answer = json.dumps(found).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
