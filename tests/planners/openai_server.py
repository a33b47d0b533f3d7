"""A small OpenAI-compatible chat completions server on loopback, for tests.

    with OpenAICompatibleServer([PLAN_A, PLAN_B]) as server:
        model = OpenAIChatModel("gpt-4.1-mini", base_url=server.base_url, api_key="test")
        ...
        server.requests  # every JSON body it received, in order

It answers ``POST /v1/chat/completions`` from a script (a list of reply strings served in
order, or a callable ``(request_json) -> str``) and ``GET /v1/models``. An unknown path is a
404, an exhausted script a 500, both with an OpenAI-style ``{"error": {...}}`` body.

Manual use: ``python -m tests.planners.openai_server [REPLY_FILE]`` serves the file's text
(or a fixed trivial plan) as the answer to every request until Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Iterable[str] | Callable[[dict[str, Any]], str]


class ScriptExhausted(Exception):
    pass


def _words(text: Any) -> int:
    return len(str(text or "").split())


class OpenAICompatibleServer:
    """Serves scripted chat completions on ``127.0.0.1`` (port 0: the OS picks one)."""

    def __init__(self, script: Script, *, host: str = "127.0.0.1", port: int = 0,
                 models: Iterable[str] = ("gpt-4.1-mini",)) -> None:
        if callable(script):
            self._reply: Callable[[dict[str, Any]], str] = script
        else:
            replies = list(script)
            for reply in replies:
                if not isinstance(reply, str):
                    raise TypeError(f"replies must be strings, got {type(reply).__name__}")
            self._replies = replies
            self._reply = self._next_reply
        self.models = tuple(models)
        self.requests: list[dict[str, Any]] = []  # every chat completion body, in order
        self.paths: list[tuple[str, str]] = []  # (method, path) of every request
        self._served = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def remaining(self) -> int | None:
        """Replies left in a list script (None for a callable script)."""
        if self._reply != self._next_reply:
            return None
        return len(self._replies) - self._served

    def start(self) -> OpenAICompatibleServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=f"openai-server:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answers ------------------------------------------------------------------------------
    def _next_reply(self, request: dict[str, Any]) -> str:
        # called under self._lock
        if self._served >= len(self._replies):
            raise ScriptExhausted(
                f"the script is exhausted: all {len(self._replies)} scripted replies were "
                f"served, request #{len(self.requests)} has none")
        reply = self._replies[self._served]
        self._served += 1
        return reply

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            text = self._reply(body)
        prompt_tokens = sum(_words(m.get("content")) for m in body.get("messages") or []
                            if isinstance(m, dict))
        completion_tokens = _words(text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so no keep-alive socket outlives a test.
            protocol_version = "HTTP/1.0"
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(status, {"error": {"message": message, "type": kind,
                                              "param": None, "code": None}})

            def _path(self) -> str:
                return self.path.split("?", 1)[0].rstrip("/")

            def do_GET(self) -> None:
                server.paths.append(("GET", self.path))
                if self._path() == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "local"}
                        for m in server.models]})
                else:
                    self._error(404, f"unknown path: GET {self.path}", "not_found")

            def do_POST(self) -> None:
                server.paths.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self._path() != "/v1/chat/completions":
                    self._error(404, f"unknown path: POST {self.path}", "not_found")
                    return
                try:
                    body = json.loads(raw or b"null")
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                except ValueError as exc:
                    self._error(400, f"invalid JSON body: {exc}", "invalid_request_error")
                    return
                try:
                    payload = server._complete(body)
                except ScriptExhausted as exc:
                    self._error(500, str(exc), "server_error")
                    return
                except Exception as exc:  # a failing callable script
                    self._error(500, f"the script failed: {type(exc).__name__}: {exc}",
                                "server_error")
                    return
                self._send(200, payload)

        return Handler


_DEFAULT_REPLY = '''```python
async def run(event, step):
    return await step.do("echo the goal", lambda: event.payload.get("goal"))
```'''


def main(argv: list[str]) -> None:
    reply = _DEFAULT_REPLY
    if argv:
        with open(argv[0], encoding="utf-8") as f:
            reply = f.read()
    with OpenAICompatibleServer(lambda request: reply, port=8765) as server:
        print(f"serving on {server.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
