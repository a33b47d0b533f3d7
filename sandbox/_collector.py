"""Pausing the cyclic garbage collector while a plan is parsed, checked and compiled.

A 100-line plan's syntax tree is a few thousand container objects that live until its code
is compiled. Collections that run meanwhile walk them, and the older-generation collections
they bring about walk every live object of the process: in a process holding many objects
(an engine with its caches), a Loader's cold load spent a quarter of its time collecting.
The tree is acyclic and reference counting frees it before the pause ends, so the collector
finds its counts where they were and nothing is left for it to collect.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block, when it was on. (Two threads pausing at once may
    shorten each other's pause; they never leave the collector off.)"""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
