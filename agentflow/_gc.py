"""The garbage collector's young-generation threshold while embedded workers run.

A worker keeps hundreds of runs in flight, and every step leaves young objects alive across a
group commit (its record, its future, its history row). With the interpreter's default
threshold (700 net allocations) the collector then runs about ten times per thousand steps and
walks those live objects again each time: 15-20% of a busy worker's time. A higher threshold
collects the same garbage less often, at the cost of at most that many more objects awaiting a
collection. Measured on W(1000 x 10): at 10,000 the collector still ran nine times and took
~10% of the run (each young collection walking ~10,000 live objects of the runs in flight,
7-13 ms); at 100,000 it does not run, and on longer runs its rare collections pause about as
long as those at 10,000 (the live objects walked are the same runs' state).

The threshold is raised only from the interpreter default (a process that chose its own keeps
it), held while any engine of the process runs a worker with ``tune_gc`` (the default), and
put back when the last one closes, unless something else changed it meanwhile.
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 100_000
_INTERPRETER_DEFAULT = 700

_lock = threading.Lock()
_holders = 0
_replaced: tuple[int, ...] | None = None  # the thresholds to restore, when we raised them


def hold() -> None:
    """An engine's worker starts: raise the young threshold if it is the default."""
    global _holders, _replaced
    with _lock:
        _holders += 1
        current = gc.get_threshold()
        if _holders == 1 and current[0] == _INTERPRETER_DEFAULT:
            gc.set_threshold(YOUNG_THRESHOLD, *current[1:])
            _replaced = current


def release() -> None:
    """An engine's worker stopped: the last one restores what ``hold`` replaced."""
    global _holders, _replaced
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _replaced is not None:
            current = gc.get_threshold()
            if current[0] == YOUNG_THRESHOLD:  # not changed by anyone since
                gc.set_threshold(*_replaced)
            _replaced = None
