"""A hostile stand-in for ``python -I -m sandbox._child``, for the protocol attack tests.

Started by ``SandboxPool._spawn`` (the tests patch the command) as
``python -I fake_child.py MODE SENTINEL``. It answers the handshake (``hello`` -> ``ready``,
``load`` -> ``loaded``) like the real child, then, on ``start``, misbehaves as ``MODE`` says.
It imports nothing from this repository, so that it runs under ``-I`` from any directory.

``SENTINEL`` is a path the host must never create: some modes ask the host, by messages, to
write it.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">I")
OUT = 1
IN = 0


def write_raw(data: bytes) -> None:
    while data:
        data = data[os.write(OUT, data):]


RUN: list[int | None] = [None]  # the run being served: the real child tags every message


def send(message: Any) -> None:
    if isinstance(message, dict) and "run" not in message and RUN[0] is not None:
        message = {**message, "run": RUN[0]}
    body = json.dumps(message, separators=(",", ":")).encode()
    write_raw(HEADER.pack(len(body)) + body)


def send_body(body: bytes) -> None:
    write_raw(HEADER.pack(len(body)) + body)


def read_exactly(size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(IN, size - len(data))
        if not chunk:
            raise SystemExit(0)  # the host closed the pipe
        data += chunk
    return data


def receive() -> dict[str, Any]:
    (size,) = HEADER.unpack(read_exactly(HEADER.size))
    message: dict[str, Any] = json.loads(read_exactly(size))
    return message


def call(message: dict[str, Any]) -> dict[str, Any]:
    """Send a request and wait for the host's reply to it (other messages are dropped)."""
    send(message)
    while True:
        reply = receive()
        if reply.get("op") == "reply" and reply.get("call") == message.get("call"):
            return reply


def idle_forever() -> None:
    while True:
        time.sleep(3600)


# -- what to do once a run starts ---------------------------------------------------------------
def garbage(run: int, sentinel: str) -> None:
    send_body(b"\xff\xfe this is not JSON at all \x00\x01")
    idle_forever()


def invalid_utf8(run: int, sentinel: str) -> None:
    send_body(b'{"op":"done","value":"\xff\xfe"}')
    idle_forever()


def oversized_prefix(run: int, sentinel: str) -> None:
    write_raw(HEADER.pack(0xFFFFFFFF))
    idle_forever()


def just_over_the_limit(run: int, sentinel: str) -> None:
    write_raw(HEADER.pack(8 * 1024 * 1024 + 1))
    idle_forever()


def non_dict(run: int, sentinel: str) -> None:
    send([{"op": "done", "value": 1}])
    idle_forever()


def json_string(run: int, sentinel: str) -> None:
    send("done")
    idle_forever()


def missing_op(run: int, sentinel: str) -> None:
    send({"value": 1, "run": run})
    idle_forever()


def op_not_a_string(run: int, sentinel: str) -> None:
    send({"op": ["done"], "value": 1, "run": run})
    idle_forever()


def truncated_then_exit(run: int, sentinel: str) -> None:
    write_raw(HEADER.pack(100) + b'{"op":"do')
    raise SystemExit(0)


def exit_mid_run(run: int, sentinel: str) -> None:
    os._exit(3)


def unknown_ops(run: int, sentinel: str) -> None:
    """Ops that exist nowhere, ops meant for the other direction, and requests to run code:
    the host must ignore them all and finish the run normally."""
    code = f"open({sentinel!r}, 'w').write('pwned')"
    for message in (
        {"op": "exec", "source": code}, {"op": "eval", "expression": code},
        {"op": "import", "name": "os"}, {"op": "shell", "command": f"touch {sentinel}"},
        {"op": "open", "path": sentinel, "mode": "w"}, {"op": "spawn", "argv": ["touch", sentinel]},
        {"op": "hello", "memory_bytes": 1}, {"op": "load", "source": code},
        {"op": "start", "run": run + 1}, {"op": "reply", "call": 1, "value": 1},
        {"op": "cancel", "run": run}, {"op": "cancelled", "run": run}, {"op": "exit"},
        {"op": "ready", "pid": 1}, {"op": "loaded"}, {"op": ""}, {"op": "__class__"},
        {"op": "DONE", "value": "not the real done"},
        {"op": "body_result", "call": 999_999, "value": "nobody asked"},
        {"op": "body_result", "body": 999_999, "value": "nobody asked"},
    ):
        send(message)
    send({"op": "done", "run": run, "value": "finished after the noise"})
    idle_until_exit()


def ungranted_tools(run: int, sentinel: str) -> None:
    """Ask the host for tools it did not grant; report the replies as the run's result."""
    names: list[Any] = [
        "__import__", "open", "eval", "exec", "os", "fetchx", "", "fetch.__globals__",
        "__class__", "tools", ["fetch"], {"name": "fetch"}, None, 7,
    ]
    replies = []
    for n, name in enumerate(names, start=1):
        reply = call({"op": "tool", "call": n, "name": name,
                      "args": [f"open({sentinel!r}, 'w')"], "kwargs": {}})
        replies.append({key: reply.get(key) for key in ("value", "error")})
    send({"op": "done", "run": run, "value": replies})
    idle_until_exit()


def hostile_tool_arguments(run: int, sentinel: str) -> None:
    """The granted tool, called with argument shapes the real child never sends."""
    shapes: list[dict[str, Any]] = [
        {"args": "abc"}, {"args": {"k": 1}}, {"args": 7}, {"kwargs": ["a", "b"]},
        {"kwargs": "abc"}, {"args": [1.5e308, -0.0, 10**30, "\u0000\u202e"]},
        {"kwargs": {"not an identifier": 1, "__class__": 2}},
        {"args": [[[[[[[[[[{"deep": [1]}]]]]]]]]]]},
    ]
    replies = []
    for n, shape in enumerate(shapes, start=1):
        reply = call({"op": "tool", "call": n, "name": "spy", **shape})
        replies.append("error" if "error" in reply else "value")
    send({"op": "done", "run": run, "value": replies})
    idle_until_exit()


def unknown_step_methods(run: int, sentinel: str) -> None:
    methods: list[Any] = [
        "_run", "__init__", "__class__", "journaled", "log", "all", "_execute", "_failed",
        "do ", "DO", None, 1, ["do"],
    ]
    replies = []
    for n, method in enumerate(methods, start=1):
        reply = call({"op": "step", "call": n, "method": method, "name": "x",
                      "text": f"open({sentinel!r}, 'w')"})
        replies.append({key: reply.get(key) for key in ("value", "error")})
    send({"op": "done", "run": run, "value": replies})
    idle_until_exit()


def done_with_nan(run: int, sentinel: str) -> None:
    send_body(b'{"op":"done","run":%d,"value":[NaN,Infinity,-Infinity]}' % run)
    idle_until_exit()


def failed_as(name: str) -> Callable[[int, str], None]:
    def fail(run: int, sentinel: str) -> None:
        send({"op": "failed", "run": run, "error": {"name": name, "message": "from the child"}})
        idle_until_exit()
    return fail


def step_without_call(run: int, sentinel: str) -> None:
    """A request the host cannot answer (no call id): the host must not wait forever."""
    send({"op": "step", "method": "sleep", "name": "nap", "duration": 0})
    idle_until_exit()


def tool_without_call(run: int, sentinel: str) -> None:
    send({"op": "tool", "name": "spy", "args": [1], "kwargs": {}})
    idle_until_exit()


def step_with_a_body_but_no_call(run: int, sentinel: str) -> None:
    """An integer ``body`` but no ``call``: the host must still not wait forever."""
    send({"op": "step", "method": "sleep", "name": "nap", "duration": 0, "body": 1})
    idle_until_exit()


def tool_with_a_body_but_no_call(run: int, sentinel: str) -> None:
    send({"op": "tool", "name": "spy", "args": [1], "kwargs": {}, "body": 1})
    idle_until_exit()


def body_result_with_bad_id(run: int, sentinel: str) -> None:
    send({"op": "body_result", "body": "not a number", "value": 1})
    idle_until_exit()


def speculative_step_with_bad_body(run: int, sentinel: str) -> None:
    send({"op": "step", "method": "do", "name": "a", "call": 1, "body": [1],
          "speculative": True})
    idle_until_exit()


def failed_with_a_string_error(run: int, sentinel: str) -> None:
    send({"op": "failed", "run": run, "error": "not a dict"})
    idle_until_exit()


def idle_until_exit() -> None:
    """Stay a well-behaved idle process: answer a cancel, leave on exit or EOF."""
    while True:
        message = receive()
        if message.get("op") == "cancel":
            send({"op": "cancelled", "run": message.get("run")})
        elif message.get("op") == "exit":
            return


MODES: dict[str, Callable[[int, str], None]] = {
    "garbage": garbage,
    "invalid-utf8": invalid_utf8,
    "oversized-prefix": oversized_prefix,
    "just-over-the-limit": just_over_the_limit,
    "non-dict": non_dict,
    "json-string": json_string,
    "missing-op": missing_op,
    "op-not-a-string": op_not_a_string,
    "truncated-then-exit": truncated_then_exit,
    "exit-mid-run": exit_mid_run,
    "unknown-ops": unknown_ops,
    "ungranted-tools": ungranted_tools,
    "hostile-tool-arguments": hostile_tool_arguments,
    "unknown-step-methods": unknown_step_methods,
    "done-with-nan": done_with_nan,
    "failed-as-system-exit": failed_as("SystemExit"),
    "failed-as-keyboard-interrupt": failed_as("KeyboardInterrupt"),
    "failed-as-generator-exit": failed_as("GeneratorExit"),
    "failed-as-cancelled-error": failed_as("CancelledError"),
    "failed-as-base-exception": failed_as("BaseException"),
    "failed-as-stop-iteration": failed_as("StopIteration"),
    "failed-as-odd-name": failed_as("not an identifier; import os"),
    "step-without-call": step_without_call,
    "tool-without-call": tool_without_call,
    "step-with-a-body-but-no-call": step_with_a_body_but_no_call,
    "tool-with-a-body-but-no-call": tool_with_a_body_but_no_call,
    "body-result-with-bad-id": body_result_with_bad_id,
    "speculative-step-with-bad-body": speculative_step_with_bad_body,
    "failed-with-a-string-error": failed_with_a_string_error,
}


def main() -> None:
    mode, sentinel = sys.argv[1], sys.argv[2]
    hello = receive()
    assert hello.get("op") == "hello"
    send({"op": "ready", "pid": os.getpid()})
    while True:
        message = receive()
        op = message.get("op")
        if op == "load":
            send({"op": "loaded"})
        elif op == "start":
            RUN[0] = int(message["run"])
            MODES[mode](int(message["run"]), sentinel)
        elif op == "cancel":
            send({"op": "cancelled", "run": message.get("run")})
        elif op == "exit":
            return


if __name__ == "__main__":
    main()
