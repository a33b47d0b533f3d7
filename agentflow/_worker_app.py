"""``agentflow worker``: a standalone worker process for the workflows of an app module."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import signal
import sys
from collections.abc import Mapping

from .engine import Engine
from .errors import InvalidArgumentError


def load_app(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidArgumentError(
            f"worker app {target!r} must be 'module:attribute', e.g. 'myapp.workflows:register'"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgumentError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise InvalidArgumentError(f"module {module_name!r} has no {attribute!r}") from None


async def register_app(engine: Engine, app: object, *, concurrency: int) -> None:
    if isinstance(app, Mapping):
        for name, code in app.items():
            engine.register(name, code, concurrency=concurrency)
    elif callable(app):
        result = app(engine)
        if inspect.isawaitable(result):
            await result
    else:
        raise InvalidArgumentError(
            "the worker app must be a function taking the engine, or a dict of name -> code"
        )


async def run_worker(
    url: str, target: str, *, concurrency: int, poll_interval: float, lease_seconds: float,
) -> int:
    app = load_app(target)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Engine.open(url, poll_interval=poll_interval, lease_seconds=lease_seconds) as engine:
        await register_app(engine, app, concurrency=concurrency)
        print(f"agentflow worker running {', '.join(engine._workflows)} on {url}", flush=True)
        await stop.wait()
    return 0
