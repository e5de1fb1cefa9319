"""A minimal OTLP/HTTP receiver for benchmarks: answers every POST /v1/traces with 200
and counts requests and bytes (written to the file named by argv[2] on SIGTERM)."""
import http.server
import json
import signal
import sys

port, out = int(sys.argv[1]), sys.argv[2]
seen = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        seen["requests"] += 1
        seen["bytes"] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    with open(out, "w") as f:
        json.dump(seen, f)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
