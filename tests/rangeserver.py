"""A small HTTP server that serves a folder and honours Range requests, for tests of URL inputs.

``python -m tests.rangeserver ROOT PORT [LOG [FAIL_AFTER]]`` serves ROOT on 127.0.0.1:PORT;
each request line (method, path with its query string, range) is appended to LOG when given,
so a test can see what reached the server; with FAIL_AFTER, the GET after that many is
answered with a 503, once (a store's passing fault). Python's own ``http.server`` sends whole
files only.
"""

from __future__ import annotations

import os
import re
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeHandler(SimpleHTTPRequestHandler):
    log_path: str | None = None
    fail_after: int | None = None  # answer the request after this many GETs with a 503, once
    _gets = 0

    def do_GET(self) -> None:
        type(self)._gets += 1
        if self.fail_after is not None and type(self)._gets == self.fail_after + 1:
            if self.log_path:
                with open(self.log_path, "a") as fh:
                    fh.write(f"503 for GET {self.path}\n")
            self.send_error(503, "Slow Down")
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        if self.log_path:
            with open(self.log_path, "a") as fh:
                fh.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")

    def send_head(self):
        path = self.translate_path(self.path.split("?", 1)[0])
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        match = _RANGE.match(self.headers.get("Range", ""))
        fh = open(path, "rb")  # noqa: SIM115 - the base class closes it
        if match is None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            start, end = 0, size - 1
        else:
            start = int(match.group(1)) if match.group(1) else max(0, size - int(match.group(2)))
            end = min(int(match.group(2)), size - 1) if match.group(1) and match.group(2) else size - 1
            if start >= size:
                fh.close()
                self.send_error(416)
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{os.stat(path).st_mtime_ns}-{size}"')
        self.end_headers()
        fh.seek(start)
        self._remaining = end - start + 1
        return fh

    def copyfile(self, source, outputfile) -> None:
        remaining = self._remaining
        while remaining > 0:
            data = source.read(min(1 << 20, remaining))
            if not data:
                break
            outputfile.write(data)
            remaining -= len(data)


def serve(root: str | Path, port: int, log: str | None = None, fail_after: int | None = None) -> ThreadingHTTPServer:
    handler = type("Handler", (RangeHandler,), {"log_path": log, "fail_after": fail_after})

    def make(*args, **kwargs):
        return handler(*args, directory=str(root), **kwargs)

    return ThreadingHTTPServer(("127.0.0.1", port), make)


if __name__ == "__main__":
    fail = int(sys.argv[4]) if len(sys.argv) > 4 else None
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None, fail).serve_forever()
