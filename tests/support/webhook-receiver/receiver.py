#!/usr/bin/env python3
"""A webhook receiver for Gatehouse's tests: Python standard library only.

It verifies Standard Webhooks signatures on its own (an implementation independent of the
Rust one), can be told to fail, and records what it received for the test to read.

    python3 receiver.py            # listens on 127.0.0.1, a port the kernel picks

Prints one JSON line {"port": N} when ready; exits when stdin closes (so it never outlives
the test). Every path except /_control/... is a webhook path. Control API (JSON):

    POST /_control/path  {"path": "/a", "secret": "whsec_..."}   the secret for a path
    POST /_control/fail  {"path": "/a", "count": 2, "status": 500} answer the next N with status
    POST /_control/redirect {"path": "/a", "location": "/b"}      answer 302 to location
    POST /_control/delay {"path": "/a", "seconds": 0.5}          wait before answering
    GET  /_control/received                                      everything received, in order
    GET  /_control/stats                                         {path: most requests at once}
"""

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 300

lock = threading.Lock()
secrets = {}  # path -> secret bytes
failures = {}  # path -> [remaining count, status]
redirects = {}  # path -> location
delays = {}  # path -> seconds
in_flight = {}  # path -> requests being handled now
max_in_flight = {}  # path -> most requests handled at once
received = []


def decode_secret(text):
    if not text.startswith("whsec_"):
        raise ValueError("secret must start with whsec_")
    return base64.b64decode(text[len("whsec_"):])


def verify(secret, msg_id, timestamp, body, signature_header):
    """True when one of the v1 signatures is HMAC-SHA256(secret, id.timestamp.body)."""
    if secret is None or not msg_id or not timestamp or not signature_header:
        return False
    try:
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            return False
    except ValueError:
        return False
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    for candidate in signature_header.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output quiet
        pass

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status, payload=None, headers=()):
        data = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_control/received":
            with lock:
                self.answer(200, list(received))
        elif self.path == "/_control/stats":
            with lock:
                self.answer(200, dict(max_in_flight))
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        body = self.read_body()
        if self.path.startswith("/_control/"):
            return self.control(json.loads(body or b"{}"))
        with lock:
            in_flight[self.path] = in_flight.get(self.path, 0) + 1
            max_in_flight[self.path] = max(max_in_flight.get(self.path, 0), in_flight[self.path])
            delay = delays.get(self.path, 0)
        time.sleep(delay)
        with lock:
            in_flight[self.path] -= 1
            secret = secrets.get(self.path)
            rule = failures.get(self.path)
            location = redirects.get(self.path)
            status = 200
            if location is not None:
                status = 302
            elif rule and rule[0] > 0:
                rule[0] -= 1
                status = rule[1]
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            received.append({
                "path": self.path,
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"),
                "content_type": headers.get("content-type"),
                "verified": verify(secret, headers.get("webhook-id"),
                                   headers.get("webhook-timestamp"), body,
                                   headers.get("webhook-signature")),
                "body": parsed,
                "raw": body.decode("utf-8", "replace"),
                "answered": status,
            })
        extra = [("Location", location)] if location is not None else []
        self.answer(status, {"ok": status < 300}, extra)

    def control(self, request):
        path = request.get("path", "/")
        with lock:
            if self.path == "/_control/path":
                secrets[path] = decode_secret(request["secret"])
            elif self.path == "/_control/fail":
                failures[path] = [int(request["count"]), int(request.get("status", 500))]
            elif self.path == "/_control/redirect":
                redirects[path] = request["location"]
            elif self.path == "/_control/delay":
                delays[path] = float(request["seconds"])
            else:
                return self.answer(404, {"error": "unknown control"})
        self.answer(200, {"ok": True})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.read()  # returns at EOF: the test (or its process) is gone
    server.shutdown()


if __name__ == "__main__":
    main()
