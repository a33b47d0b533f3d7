"""The sandbox process: runs one plan run at a time, reaching the host only by messages.

Started by :class:`sandbox.process.SandboxPool` as ``python -I -m sandbox._child``. It limits
itself (memory, file size, processes) before it reads any plan, keeps the protocol on a private
copy of stdout, and drives plan coroutines with a small scheduler of its own: every ``await`` in
a plan ends at a step call, which becomes a message to the host, so the process is idle exactly
when it waits for the host. Tool calls are synchronous round trips.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

from ._child_channel import Channel, error_info
from ._child_plan import _READING_CODE, Event, StepProxy, tool_caller
from ._child_scheduler import Scheduler, Tagged, _as_coroutine

# -- the process ------------------------------------------------------------------------------
_BLOCKED_EVENTS = (
    "open", "socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty",
    "os.posix_spawn", "os.spawn", "os.kill", "os.remove", "os.rename", "os.mkdir", "os.rmdir",
    "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate", "os.putenv", "os.unsetenv",
    "shutil.", "ctypes.", "sys._getframe", "sys.settrace", "sys.setprofile", "code.__new__",
    "function.__new__", "object.__getattr__", "winreg.", "urllib.", "ftplib.", "smtplib.",
    "http.", "imaplib.", "poplib.", "telnetlib.", "webbrowser.", "pty.",
)


class SandboxViolation(RuntimeError):
    """Raised inside the sandbox process by the audit hook."""


def lock_down() -> None:
    """Defense in depth under the RestrictedPython policy: from here on this process may not
    open files or sockets, start processes, or import modules it has not imported already.
    Audit hooks cannot be removed once added."""
    import _strptime  # type: ignore[import-not-found]  # noqa: F401 - imported lazily by strptime

    loaded = frozenset(sys.modules)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            if args and args[0] not in loaded:
                raise SandboxViolation(f"import of {args[0]!r} is not allowed in the sandbox")
        elif event.startswith(_BLOCKED_EVENTS) and not (
                _READING_CODE[0] and event == "object.__getattr__"):
            raise SandboxViolation(f"{event} is not allowed in the sandbox")

    sys.addaudithook(hook)


def limit_self(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0)) if os.getuid() != 0 else None
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # anything printed by accident goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    channel = Channel(0, protocol_out)
    hello = channel.receive()
    limit_self(int(hello.get("memory_bytes", 512 * 1024 * 1024)))
    workdir = hello.get("workdir")
    if workdir:
        os.chdir(workdir)
    from ._runtime import PrintLog
    from .plan import compile_plan  # imported after the limits: plan code never sees modules

    lock_down()

    scheduler = Scheduler(channel)
    plan: Any = None
    tools: dict[str, Any] = {}
    run_id: Any = None
    # print output is bounded per run: each run gets a fresh budget
    run_log = [PrintLog(lambda text: channel.send({"op": "print", "text": text}))]
    channel.send({"op": "ready", "pid": os.getpid()})
    while True:
        message = channel.receive()
        op = message.get("op")
        if op == "load":
            try:
                plan = compile_plan(message["source"], tools=message.get("tools"),
                                    allowed_imports=message.get("allowed_imports")
                                    or _default_imports())
                tools = _tool_stubs(message.get("tools") or [], channel, scheduler)
                channel.send({"op": "loaded"})
            except Exception as exc:
                channel.send({"op": "load_failed", "error": error_info(exc)})
        elif op == "start":
            run_id = int(message["run"])
            scheduler.waiting.clear()
            scheduler.current_run = channel.run = run_id
            # Fresh module globals for every run: nothing a run leaves in them reaches the next.
            runner = plan.load(tools=tools, print_sink=lambda text: run_log[0].write(text),
                               print_limit=None)
            scheduler.counts = {}
            scheduler.fingerprints = message.get("inputs") is True
            known = message.get("journaled")
            scheduler.journaled = None if known is None else {
                (str(name), int(count)) for name, count in known
            }
            run_log[0] = PrintLog(lambda text: channel.send({"op": "print", "text": text}))
            current = run_id

            def finished(ok: bool, value: Any, current: Any = current) -> None:
                # Close what the run left waiting (step.all siblings) while the run is still
                # the current one: their finally blocks run now, on this run's CPU budget,
                # never during the next run.
                for task in list(scheduler.waiting.values()):
                    with contextlib.suppress(BaseException):
                        task.coroutine.close()
                scheduler.waiting.clear()
                try:
                    if ok:
                        channel.send({"op": "done", "run": current, "value": value})
                        return
                except (TypeError, ValueError) as exc:  # a live object: only data crosses
                    ok, value = False, TypeError(f"the plan returned a value that is not "
                                                 f"plain data: {exc}")
                finally:
                    scheduler.current_run = channel.run = None
                channel.send({"op": "failed", "run": current, "error": error_info(value)})

            scheduler.spawn(
                _as_coroutine(runner(Event(message["event"]), StepProxy(scheduler))), finished
            )
        elif op == "reply":
            scheduler.deliver(int(message["call"]), message)
        elif op == "body":
            _run_body(channel, scheduler, message)
        elif op == "drain":
            # Everything the run's coroutines could do before this message is done and
            # sent (each message is handled to the end before the next is read).
            channel.send({"op": "drained"})
        elif op == "cancel":
            scheduler.current_run = channel.run = None
            for task in scheduler.waiting.values():
                with contextlib.suppress(BaseException):
                    task.coroutine.close()
            scheduler.waiting.clear()
            channel.send({"op": "cancelled", "run": message.get("run")})
        elif op == "exit":
            return


def _run_body(channel: Channel, scheduler: Scheduler, message: dict[str, Any]) -> None:
    body_id = int(message["body"])
    reply_to = int(message["call"])
    fn = scheduler.bodies.get(body_id)

    def finish(ok: bool, value: Any) -> None:
        out: dict[str, Any] = {"op": "body_result", "call": reply_to}
        if ok:
            out["value"] = value
        else:
            out["error"] = error_info(value)
        try:
            channel.send(out)
        except (TypeError, ValueError) as exc:  # a live object: only data crosses
            channel.send({"op": "body_result", "call": reply_to,
                          "error": {"name": "TypeError", "message": str(exc)}})

    if fn is None:
        finish(False, RuntimeError("unknown step body"))
        return
    known = scheduler.body_steps.get(body_id)
    # The host's call names this attempt: tool calls made for it carry it, so that the host
    # can refuse those of an attempt it gave up on (timed out) rather than run them late.
    step = None if known is None else (*known, reply_to)
    try:
        with scheduler.running(step):
            result = fn()
    except Exception as exc:
        finish(False, exc)
        return
    if hasattr(result, "__await__"):
        scheduler.spawn(_as_coroutine(Tagged(result, step, scheduler)), finish)
    else:
        finish(True, result)


def _tool_stubs(names: list[str], channel: Channel, scheduler: Scheduler) -> dict[str, Any]:
    caller = tool_caller(channel, scheduler)

    def stub(name: str) -> Callable[..., Any]:
        def invoke(*args: Any, **kwargs: Any) -> Any:
            return caller(name, list(args), kwargs)
        invoke.sandbox_tool = name  # type: ignore[attr-defined]  # see fingerprint
        return invoke

    return {name: stub(name) for name in names}


def _default_imports() -> frozenset[str]:
    from .validate import DEFAULT_IMPORTS
    return DEFAULT_IMPORTS


if __name__ == "__main__":
    main()
