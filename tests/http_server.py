"""Local HTTP servers for tests: a base that runs one on 127.0.0.1, and a file server
that records every request, honours Range and misbehaves on cue."""
import http.server
import threading
import time


class LocalServer:
    """An HTTP server with HANDLER on a free 127.0.0.1 port, in a daemon thread, as a context manager.

    The handler reaches this object as `self.server.owner`.
    """

    def __init__(self, handler):
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    def url(self, path=""):
        return f"http://127.0.0.1:{self._httpd.server_port}{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._httpd.shutdown()
        self._httpd.server_close()


class FileServer(LocalServer):
    """Serves `files` (URL path -> bytes) on 127.0.0.1.

    `faults[path]` is a list consumed one per request: an HTTP status to answer
    with, "cut" to send half of the body the headers promise and hang up, or
    "no-range" to ignore a Range header and send the whole file, ("no-length", N) to send
    the first N bytes of the body without a Content-Length and close the connection (a
    truncation the client cannot see), or "chunked-cut" to send half of the body in
    chunked encoding and hang up before the last chunk.
    `requests` holds (path, Range header or None) for every request.
    """

    def __init__(self):
        super().__init__(_Handler)
        self.files = {}
        self.faults = {}
        self.requests = []
        self.hangup = threading.Event()  # ends every "stall" at once (set when the server stops)

    def __exit__(self, *exc_info):
        self.hangup.set()
        super().__exit__(*exc_info)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        owner = self.server.owner
        range_header = self.headers.get("Range")
        owner.requests.append((self.path, range_header))
        pending_faults = owner.faults.get(self.path)
        fault = pending_faults.pop(0) if pending_faults else None
        body = owner.files.get(self.path)
        if isinstance(fault, int) or body is None:
            self.send_error(fault or 404)
            return
        if fault == "no-range":
            range_header = None
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
        if start >= len(body):
            self.send_error(416)
            return
        self.send_response(206 if range_header else 200)
        if range_header:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        payload = body[start:]
        if _kind(fault) == "no-length":
            self.end_headers()
            self.wfile.write(payload[: fault[1]])
            return
        if fault == "chunked-cut":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = payload[: len(payload) // 2]
            self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
            return
        self.send_header("Content-Length", fault[1] if _kind(fault) == "length" else str(len(payload)))
        self.end_headers()
        try:
            if _kind(fault) == "slow":
                for start in range(0, len(payload), fault[1]):
                    self.wfile.write(payload[start:start + fault[1]])
                    self.wfile.flush()
                    time.sleep(fault[2])
            elif _kind(fault) == "stall":
                self.wfile.write(payload[: fault[1]])
                self.wfile.flush()
                owner.hangup.wait(60)
            else:
                self.wfile.write(payload[: len(payload) // 2] if fault == "cut" else payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up
            pass

    def log_message(self, *args):
        pass


def _kind(fault):
    return fault[0] if isinstance(fault, tuple) else None
