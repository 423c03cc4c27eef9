"""A file server on 127.0.0.1 for the download tests: never the network, and it stops by itself."""
from __future__ import annotations

import contextlib
import http.server
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping

LIFETIME_S = 300  # the server stops after this, whatever happens to the test


@contextlib.contextmanager
def serve(files: Mapping[str, Path | bytes], cut: Iterable[str] = (), unsized: Iterable[str] = ()) -> Iterator[tuple[str, list[str]]]:
    """Serve `files` (name -> a file or its bytes); yields (base URL, the paths requested so far).

    The names in `cut` announce twice their length and send it once: a connection that breaks off.
    The names in `unsized` are sent without a Content-Length (the body ends when the connection
    closes), so the client cannot know the length before the bytes arrive. Unknown names get a 404.
    """
    hits: list[str] = []
    broken = set(cut)
    no_length = set(unsized)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            name = self.path.lstrip("/")
            if name not in files:
                self.send_error(404)
                return
            source = files[name]
            size = len(source) if isinstance(source, bytes) else source.stat().st_size
            self.send_response(200)
            if name not in no_length:
                self.send_header("Content-Length", str(2 * size if name in broken else size))
            self.end_headers()
            if isinstance(source, bytes):
                self.wfile.write(source)
                return
            with open(source, "rb") as body:
                while chunk := body.read(1 << 20):
                    self.wfile.write(chunk)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a client that hangs up early is expected here

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.timeout = 0.2
    stop = threading.Event()
    deadline = time.monotonic() + LIFETIME_S

    def run():
        while not stop.is_set() and time.monotonic() < deadline:
            httpd.handle_request()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        stop.set()
        thread.join(timeout=5)
        httpd.server_close()
