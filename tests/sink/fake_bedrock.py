"""A fake AWS Bedrock runtime for Claude models, checking what Bedrock checks.

- Every request's SigV4 signature is recomputed with botocore's own signer (the
  access key, secret and session token given here, the region and service `bedrock`,
  the request's X-Amz-Date, its signed headers and body) and a mismatch is refused
  403 `InvalidSignatureException`; or, with --api-key, `Authorization: Bearer <key>` is
  required (a Bedrock API key).
- `POST /model/{modelId}/invoke` and `/invoke-with-response-stream` take an Anthropic
  Messages body as Bedrock does: `anthropic_version: "bedrock-2023-05-31"`, no `model`
  and no `stream` (400 `ValidationException` otherwise), the model id in the path.
- Answers come from the real-client kit's planner (tests/kit/fake_anthropic.py: text,
  `ECHO:`, `RUN_BASH:` tool use, tool results): JSON for invoke, and for the stream real
  AWS event-stream frames (prelude, headers, CRCs), each a `chunk` event whose payload is
  `{"bytes": base64 of one Anthropic event}`, the last carrying
  `amazon-bedrock-invocationMetrics`, as Bedrock sends them.
- `POST /__fake/config` `{"fail_status": 429, "fail_count": 2}` fails the next requests
  with Bedrock's error shape (`x-amzn-ErrorType`, `{"message"}`).

Each request is logged, before its answer is written, as one JSON line: path, headers,
body, status, and `auth`
("sigv4" or "bearer" when it passed)."""
import argparse
import base64
import datetime
import json
import os
import re
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kit"))
import fake_anthropic as kit  # noqa: E402

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

LOCK = threading.RLock()
STATE = {"fail_status": 0, "fail_count": 0}
ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
               429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}


def frame(headers, payload):
    """One AWS event-stream message: prelude (total and headers length, CRC), string
    headers, payload, message CRC."""
    hbytes = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        hbytes += bytes([len(n)]) + n + bytes([7]) + len(v).to_bytes(2, "big") + v
    total = 12 + len(hbytes) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(hbytes).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + hbytes + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


def chunk(event):
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    return frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default="AKIDFAKEBEDROCK")
    ap.add_argument("--secret-key", default="fake/bedrock/secret+key")
    ap.add_argument("--session-token", default=None)
    ap.add_argument("--api-key", default=None, help="require this Bedrock API key instead of SigV4")
    args = ap.parse_args()
    kit.CONFIG.setdefault("reply", "Hello from the fake Bedrock.")

    def sigv4_ok(handler, raw):
        auth = handler.headers.get("authorization", "")
        m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", auth)
        if not m:
            return "no SigV4 Authorization header"
        key, _, region, service, signed, signature = m.groups()
        if key != args.access_key or region != args.region or service != "bedrock":
            return "wrong credential scope %s/%s/%s" % (key, region, service)
        names = signed.split(";")
        headers = {n: handler.headers.get(n, "") for n in names}
        if "x-amz-date" not in headers:
            return "x-amz-date is not signed"
        if args.session_token and handler.headers.get("x-amz-security-token") != args.session_token:
            return "the session token is missing or wrong"
        stamp = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        if abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) > 300:
            return "the signature is more than 5 minutes old"
        request = AWSRequest(method=handler.command, url="http://%s%s" % (headers.get("host", ""), handler.path),
                             data=raw, headers=headers)
        request.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(Credentials(args.access_key, args.secret_key, args.session_token), "bedrock", args.region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if signer.signed_headers(signer.headers_to_sign(request)) != signed:
            return "signed headers differ: %s" % signed
        return None if expected == signature else "signature mismatch"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        record = None

        def log_message(self, *a):
            pass

        def logged(self, status, auth):
            """Logs the request before its answer is written: a client that has the
            answer finds the request in the log."""
            if self.record is not None:
                with LOCK, open(args.log, "a") as f:
                    f.write(json.dumps(dict(self.record, status=status, auth=auth)) + "\n")
                self.record = None

        def error(self, status, message, auth=None):
            self.logged(status, auth)
            data = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-amzn-ErrorType", ERROR_TYPES.get(status, "InternalServerException") + ":http://internal.amazon.com/coral/com.amazon.bedrock/")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return status

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
            try:
                record["body"] = json.loads(raw)
            except ValueError:
                record["body"] = raw.decode("utf-8", "replace")
            self.record = record
            self.route(raw, record["body"])
            self.record = None

        def route(self, raw, body):
            if self.path == "/__fake/config":
                self.record = None
                STATE.update(body)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 204, None
            m = re.fullmatch(r"/model/([^/]+)/(invoke|invoke-with-response-stream)", self.path)
            if not m:
                return self.error(404, "no route for %s" % self.path), None
            if args.api_key:
                if self.headers.get("authorization") != "Bearer " + args.api_key:
                    return self.error(403, "Authentication failed: the API key is invalid"), None
                auth = "bearer"
            else:
                why = sigv4_ok(self, raw)
                if why:
                    self.logged(403, None)
                    data = json.dumps({"message": "The request signature we calculated does not match: " + why}).encode()
                    self.send_response(403)
                    self.send_header("x-amzn-ErrorType", "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return 403, None
                auth = "sigv4"
            with LOCK:
                if STATE["fail_count"] > 0:
                    STATE["fail_count"] -= 1
                    return self.error(STATE["fail_status"], "fake Bedrock failure", auth), auth
            if not isinstance(body, dict):
                return self.error(400, "Malformed input request: the body is not JSON", auth), auth
            for bad in ("model", "stream"):
                if bad in body:
                    return self.error(400, "Malformed input request: #: extraneous key [%s] is not permitted" % bad, auth), auth
            if body.get("anthropic_version") != "bedrock-2023-05-31":
                return self.error(400, "Malformed input request: anthropic_version must be bedrock-2023-05-31", auth), auth
            if not isinstance(body.get("max_tokens"), int) or not isinstance(body.get("messages"), list):
                return self.error(400, "Malformed input request: max_tokens and messages are required", auth), auth
            model = unquote(m.group(1))
            content, stop = kit._plan_content(body)
            usage = {"input_tokens": kit._estimate_tokens({k: body.get(k) for k in ("system", "messages", "tools")}),
                     "output_tokens": max(1, len(json.dumps(content)) // 4)}
            message = {"id": "msg_bdrk_" + os.urandom(8).hex(), "type": "message", "role": "assistant",
                       "model": model, "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}
            self.logged(200, auth)
            if m.group(2) == "invoke":
                data = json.dumps(message).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return 200, auth
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("x-amzn-bedrock-content-type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [{"type": "message_start", "message": dict(message, content=[], stop_reason=None,
                                                                 usage=dict(usage, output_tokens=1))}]
            for i, block in enumerate(content):
                if block["type"] == "text":
                    start = {"type": "text", "text": ""}
                    deltas = [{"type": "text_delta", "text": p} for p in kit._chunks(block["text"])]
                else:
                    start = dict(block, input={})
                    deltas = [{"type": "input_json_delta", "partial_json": p} for p in kit._chunks(json.dumps(block["input"]))]
                events.append({"type": "content_block_start", "index": i, "content_block": start})
                events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
                events.append({"type": "content_block_stop", "index": i})
            events.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": usage["output_tokens"]}})
            events.append({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": usage["input_tokens"], "outputTokenCount": usage["output_tokens"],
                "invocationLatency": 12, "firstByteLatency": 5}})
            for event in events:
                data = chunk(event)
                # Frames cut across writes, as a network may.
                for piece in (data[:len(data) // 2], data[len(data) // 2:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return 200, auth

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
