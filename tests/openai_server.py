"""A small OpenAI-compatible HTTP server for tests, with fault injection.

It either answers from a script (for unit tests of the client and the retry wrapper) or
forwards to a real upstream server (llama.cpp, vLLM) and injects faults in front of it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A fault is one of: None (answer), ("429", retry_after), ("500",), ("401",), ("404",),
# ("hang", seconds), ("truncated",)
Fault = tuple[Any, ...] | None


class FaultServer:
    def __init__(self, *, upstream: str | None = None, faults: Callable[[int, dict], Fault] | None = None,
                 reply: Callable[[dict], str] | None = None):
        self.upstream = upstream
        self.faults = faults or (lambda n, body: None)
        self.reply = reply or (lambda body: "The answer is (B).")
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, **body})
                    server.headers.append(dict(self.headers))
                fault = server.faults(n, body)
                if fault is not None:
                    kind = fault[0]
                    if kind == "429":
                        return self._send(429, {"error": {"message": "rate limited"}},
                                          {"Retry-After": str(fault[1])})
                    if kind == "500":
                        return self._send(500, {"error": {"message": "internal error"}})
                    if kind == "401":
                        return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                    if kind == "404":
                        missing = f"The model `{body.get('model')}` does not exist"
                        return self._send(404, {"error": {"message": missing}})
                    if kind == "hang":
                        time.sleep(fault[1])
                        return self._send(504, {"error": {"message": "late"}})
                    if kind == "truncated":
                        raw = b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "mess'
                        return self._send_raw(200, raw)
                if server.upstream:
                    req = urllib.request.Request(server.upstream + self.path.removeprefix("/v1"),
                                                 data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        return self._send_raw(resp.status, resp.read())
                return self._send(200, server._answer(body))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._send_raw(status, json.dumps(payload).encode(), headers)

            def _send_raw(self, status: int, raw: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, body: dict) -> dict:
        text = self.reply(body)
        usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        if "messages" in body:
            return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}], "usage": usage}
        return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "length", "text": text, "logprobs": None}],
                "usage": usage}

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def llama_cpp_server(*extra_args: str, start_timeout: float = 120) -> Iterator[tuple[str, str]]:
    """llama.cpp's OpenAI-compatible server on the default model's GGUF, on a free port:
    yields (base URL, model id) once it answers, and stops it afterwards."""
    import pytest

    from harness.backends.models import gguf_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
           "--port", str(port), "--seed", "0", *extra_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + start_timeout
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    model_id = json.loads(resp.read())["data"][0]["id"]
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("llama.cpp server exited at start-up")
                if time.time() > deadline:
                    pytest.fail(f"llama.cpp server did not start in {start_timeout:.0f} s")
                time.sleep(0.5)
        yield url, model_id
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
