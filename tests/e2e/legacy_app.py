"""A legacy web app that knows nothing of the gateway or of the sub-path it is mounted under,
built on nothing but the standard library's ``http.server``; ``python legacy_app.py PORT``.

It answers the way such apps do: redirects to relative references (``simple/``), to absolute
paths (``/simple/``), to absolute URLs built from ``X-Forwarded-Host`` (else ``Host``) or from
its own address, and cookies with ``Path=/`` (or none). ``/account`` shows the path, the
``Cookie`` and the ``Remote-User`` it received (an app that trusts an identity header).
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LegacyApp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        host = self.headers.get("X-Forwarded-Host") or self.headers.get("Host", "")
        own = f"http://127.0.0.1:{self.server.server_address[1]}"
        if path == "/":
            self._answer(302, [("Location", "simple/")])
        elif path in ("/simple", "/packages"):
            self._answer(301, [("Location", path + "/")])
        elif path == "/simple/":
            self._answer(200, [], b'<a href="demo/">demo</a>')
        elif path == "/simple/demo":
            self._answer(301, [("Location", f"http://{host}/simple/demo/")])
        elif path == "/simple/demo/":
            self._answer(200, [], b'<a href="../../packages/demo-1.0.tar.gz">demo-1.0</a>')
        elif path == "/internal":
            self._answer(302, [("Location", f"{own}/simple/?from=internal")])
        elif path == "/go":
            # A naive "?next=" redirect: wherever the query says, as legacy apps do.
            to = urllib.parse.parse_qs(query).get("to", ["/"])[0]
            self._answer(302, [("Location", to)])
        elif path == "/elsewhere":
            self._answer(302, [("Location", "https://elsewhere.example/landing")])
        elif path == "/login":
            self._answer(
                303,
                [
                    ("Location", "/account?welcome=1#top"),
                    ("Set-Cookie", "sid=s3cret; Path=/; HttpOnly"),
                    ("Set-Cookie", "theme=dark"),
                    ("Set-Cookie", "tab=2; Path=/account"),
                ],
            )
        elif path == "/logout":
            self._answer(302, [("Location", "/"), ("Set-Cookie", "sid=; Path=/; Max-Age=0")])
        elif path == "/account":
            seen = {
                "path": self.path,
                "cookie": self.headers.get("Cookie"),
                "user": self.headers.get("Remote-User"),
            }
            self._answer(200, [("Content-Type", "application/json")], json.dumps(seen).encode())
        elif path == "/cached":
            self._answer(200, [("Cache-Control", "max-age=60")], b"the same for everyone")
        else:
            self._answer(404, [], b"not found")

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        self.send_response(status)
        if not any(name == "Content-Type" for name, _ in headers):
            headers = [("Content-Type", "text/html; charset=utf-8"), *headers]
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the gateway's access log tells the story


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), LegacyApp).serve_forever()
