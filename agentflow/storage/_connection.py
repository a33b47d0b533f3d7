"""A SQLite connection driven from the event loop, with group commit.

SQLite in WAL mode with ``synchronous=NORMAL`` commits in tens of microseconds, less than a
hop to a helper thread costs, so statements run on the loop's own thread. Writes are units of
work (plain functions of the connection): every unit queued during one turn of the loop is
committed in one ``BEGIN IMMEDIATE`` ... ``COMMIT``, each inside its own savepoint so that one
unit's failure rolls back only that unit. A caller's ``await write(...)`` returns only after
the commit that holds its unit.

Checkpoints (copying the WAL back into the database file, with an fsync) would stall the loop
for milliseconds inside some commit; a helper thread with its own connection runs them instead.

Other processes may hold the write lock: instead of blocking the loop in SQLite's busy handler,
a locked database is retried asynchronously with backoff, and only a lock held for longer than
``lock_timeout`` reaches the caller, as :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..errors import StorageError

T = TypeVar("T")
Unit = Callable[[sqlite3.Connection], Any]

_BACKOFF_FIRST = 0.0005
_BACKOFF_MAX = 0.05


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class CommitHooks(Protocol):
    """What a store does around each group commit: at its start (inside the transaction),
    just before it commits (a last write), and at its end, committed or not."""

    def begin(self, conn: sqlite3.Connection) -> None: ...

    def before_commit(self, conn: sqlite3.Connection) -> None: ...

    def end(self) -> None: ...


class Connection:
    def __init__(self, path: str, *, lock_timeout: float = 30.0,
                 hooks: CommitHooks | None = None) -> None:
        self._path = path
        self._lock_timeout = lock_timeout
        self._hooks = hooks
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[Unit, bool, asyncio.Future[Any]]] = []
        self._flushing = False
        self._checkpointer: _Checkpointer | None = None
        self._later: dict[str, list[Any]] | None = None
        self._before: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = None
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        # A short busy timeout rides out a checkpoint or a reader's WAL snapshot; longer waits
        # for another writer happen asynchronously (see _flush).
        conn.execute("PRAGMA busy_timeout = 20")
        if self._path != ":memory:":
            self._retry_sync(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = _Checkpointer(self._path)
        conn.execute("PRAGMA synchronous = NORMAL")

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the storage is closed")
        return self._conn

    def _retry_sync(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self._lock_timeout
        delay = _BACKOFF_FIRST
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        deadline = time.monotonic() + self._lock_timeout
        delay = _BACKOFF_FIRST
        while True:
            try:
                return fn(self.conn)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() > deadline:
                    raise StorageError(f"reading {self._path} failed: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def write(self, fn: Callable[[sqlite3.Connection], T], *,
              savepoint: bool = True) -> asyncio.Future[T]:
        """Queue ``fn`` for the next group commit; await the result to have it committed.
        (A plain function returning the future: one coroutine less on every step's path.)

        ``savepoint=False`` is for units that raise only before their first write: they skip
        the savepoint that would undo a half-done unit."""
        loop = self._use_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._flushing:
            self._schedule_flush(loop)
        self._queue.append((fn, savepoint, future))
        return future

    def before_next_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` as the next group commit begins: the units it writes join that
        commit. For work gathered during a turn of the loop (the creates made together),
        which would otherwise take a turn of its own and, behind the commit already
        scheduled, a commit of its own. ``callback`` must not raise."""
        loop = self._use_loop()
        self._before.append(callback)
        if not self._flushing:
            self._schedule_flush(loop)

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon(self._flush_now)
        self._flushing = True

    def _use_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop. One loop at a time: the store is not for several threads' loops
        writing at once, but may pass from one to the next (a script's successive
        asyncio.run calls, a threaded web app's requests); a flush the last loop had
        scheduled may then never run, so the next write schedules one."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._flushing = False
        return loop

    def _flush_now(self) -> None:
        if not self._try_commit():
            asyncio.get_running_loop().create_task(self._flush_when_unlocked())

    async def _flush_when_unlocked(self) -> None:
        deadline = time.monotonic() + self._lock_timeout
        delay = _BACKOFF_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
            if self._try_commit():
                return
            if time.monotonic() > deadline:
                self._fail_all(StorageError(
                    f"{self._path} stayed locked by another process for more than "
                    f"{self._lock_timeout:g} seconds"
                ))
                return

    def later(self, sql: str, rows: list[Any]) -> None:
        """From inside a write unit: insert ``rows`` with ``sql`` at the end of this commit,
        in one ``executemany`` with every other unit's rows for the same statement."""
        assert self._later is not None, "later() is only for write units"
        self._later.setdefault(sql, []).extend(rows)

    def _fail_all(self, error: BaseException) -> None:
        batch, self._queue = self._queue, []
        self._flushing = False
        for _, _, future in batch:
            if not future.done():
                future.set_exception(error)

    def _try_commit(self) -> bool:
        """Commit every queued unit in one transaction; False if the database is locked."""
        if self._before:
            self._run_before()
        if self._conn is None:
            self._fail_all(StorageError("the storage is closed"))
            return True
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                return False
            self._fail_all(StorageError(f"writing {self._path} failed: {exc}"))
            return True
        batch, self._queue = self._queue, []
        self._flushing = False
        outcomes: list[tuple[bool, Any]] = []
        later: dict[str, list[Any]] = {}
        self._later = later
        hooks = self._hooks
        try:
            if hooks is not None:
                hooks.begin(conn)
            for fn, savepoint, _ in batch:
                outcomes.append(self._run_unit(conn, fn, savepoint, later))
            for sql, rows in later.items():
                conn.executemany(sql, rows)
            if hooks is not None:
                hooks.before_commit(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = exc if not isinstance(exc, sqlite3.Error) else StorageError(
                f"writing {self._path} failed: {exc}"
            )
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return True
        finally:
            self._later = None
            if hooks is not None:
                hooks.end()
        for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the caller was cancelled; the work is committed all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return True

    def _run_before(self) -> None:
        """Run the ``before_next_commit`` callbacks; their units go first in the commit, so
        that their callers hear of it first (a creator then writes again in the turn in
        which the steps of the instances already running do, and both join one commit)."""
        callbacks, self._before = self._before, []
        queued, self._queue = self._queue, []
        for callback in callbacks:
            callback()
        self._queue.extend(queued)

    @staticmethod
    def _run_unit(
        conn: sqlite3.Connection, fn: Unit, savepoint: bool, later: dict[str, list[Any]]
    ) -> tuple[bool, Any]:
        if not savepoint:
            try:
                return True, fn(conn)
            except sqlite3.Error:
                raise  # possibly half-done: fail the batch
            except Exception as exc:
                return False, exc
        conn.execute("SAVEPOINT unit")
        queued = {sql: len(rows) for sql, rows in later.items()}
        try:
            result = fn(conn)
        except Exception as exc:
            # Undo just this unit; if even that fails the batch fails (raised from here).
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
            for sql, rows in later.items():
                del rows[queued.get(sql, 0):]
            if isinstance(exc, sqlite3.Error):
                return False, StorageError(f"database error: {exc}")
            return False, exc
        conn.execute("RELEASE unit")
        return True, result

    async def close(self) -> None:
        if self._queue or self._before:
            self._use_loop()  # units a loop that ended left queued are committed now
            if not self._flushing:
                self.write(lambda conn: None)
        while self._queue or self._before:
            await asyncio.sleep(0.001)
        self._loop = None
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Checkpointer:
    """Runs passive WAL checkpoints on a thread of its own, every ``interval`` seconds."""

    def __init__(self, path: str, interval: float = 0.25) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentflow-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            while not self._stop.wait(self._interval):
                with contextlib.suppress(sqlite3.OperationalError):  # busy: next time
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
