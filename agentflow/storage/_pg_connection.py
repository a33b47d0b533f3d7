"""A PostgreSQL connection for the storage: one psycopg connection on its own thread, with
the small sqlite3-like surface the backend's statements are written against.

Statements are written once with ``?`` placeholders; here they become psycopg's ``%s`` (and a
literal ``%`` is escaped). Inside a write unit, a read of one instance row by iid takes the
row lock (``FOR UPDATE``): PostgreSQL writers run concurrently, unlike SQLite's one writer, so
every check-then-write on an instance is made under that lock.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import StorageError

T = TypeVar("T")

CHANNEL = "agentflow_changes"
_WAKES = re.compile(r"^\s*(INSERT INTO (instances|inbox)|UPDATE instances SET (status|params))")
_ROW_BY_IID = re.compile(r"^\s*SELECT .* FROM instances WHERE iid = \?\s*$", re.DOTALL)


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            "the PostgreSQL backend needs psycopg: pip install 'agentflow[postgres]'"
        ) from None
    return psycopg


class PgCursor:
    """What a statement returns: rows, and how many rows it changed."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.rowcount: int = cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def __iter__(self) -> Any:
        return iter(self.fetchall())


class PgConnection:
    """The statements of one unit of work, inside one transaction."""

    def __init__(self, raw: Any, *, writing: bool) -> None:
        self._raw = raw
        self._writing = writing
        self._later: dict[str, list[Any]] = {}
        self.wakes = False  # the unit made something runnable: notify the other workers

    @staticmethod
    def translate(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        if self._writing and _ROW_BY_IID.match(sql):
            sql = sql.rstrip() + " FOR UPDATE"
        if self._writing and not self.wakes and _WAKES.match(sql) and "||" not in sql:
            self.wakes = True  # new instances, events, status changes (claims excepted)
        cursor = self._raw.cursor()
        cursor.execute(self.translate(sql), tuple(params))
        return PgCursor(cursor)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._raw.cursor() as cursor:
                cursor.executemany(self.translate(sql), [tuple(r) for r in rows])

    def later(self, sql: str, rows: list[Any]) -> None:
        self._later.setdefault(sql, []).extend(rows)

    def flush(self) -> None:
        for sql, rows in self._later.items():
            self.executemany(sql, rows)
        self._later.clear()
        if self.wakes:  # delivered to the listeners when the transaction commits
            self._raw.execute("SELECT pg_notify(%s, '')", (CHANNEL,))


class PgDb:
    """Runs units of work on one connection, one at a time, on a thread of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._raw: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentflow-pg")
        self._unit: PgConnection | None = None
        self._listening = False
        self._listener: threading.Thread | None = None
        self._pid = 0  # the server process of this store's connection

    async def start(self) -> None:
        psycopg = _driver()

        def connect() -> Any:
            return psycopg.connect(self.url, autocommit=True)

        try:
            self._raw = await self._call(connect)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to {_safe(self.url)}: {exc}") from None
        self._pid = self._raw.info.backend_pid  # (its own announcements are not news)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def read(self, fn: Callable[[Any], T]) -> T:
        return await self._run(fn, writing=False)

    async def write(self, fn: Callable[[Any], T], *, savepoint: bool = True) -> T:
        return await self._run(fn, writing=True)

    def before_next_commit(self, callback: Callable[[], None]) -> None:
        """Each write is a transaction of its own here: ``callback`` runs at the next turn."""
        asyncio.get_running_loop().call_soon(callback)

    def later(self, sql: str, rows: list[Any]) -> None:
        assert self._unit is not None, "later() is only for write units"
        self._unit.later(sql, rows)

    async def _run(self, fn: Callable[[Any], T], *, writing: bool) -> T:
        if self._raw is None:
            raise StorageError("the storage is closed")
        psycopg = _driver()

        def unit() -> T:
            conn = PgConnection(self._raw, writing=writing)
            self._unit = conn
            try:
                with self._raw.transaction():
                    result = fn(conn)
                    conn.flush()
                return result
            finally:
                self._unit = None

        try:
            return await self._call(unit)
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL: {exc}") from exc

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on this loop whenever another connection's write made something
        runnable (LISTEN/NOTIFY on a connection of its own, on a thread of its own)."""
        loop = asyncio.get_running_loop()
        psycopg = _driver()
        self._listening = True

        def run() -> None:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while self._listening:
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            if note.pid != self._pid and not loop.is_closed():
                                loop.call_soon_threadsafe(callback)
            except (psycopg.Error, RuntimeError):
                return  # the engine polls as well: a lost listener only adds latency

        self._listener = threading.Thread(target=run, name="agentflow-pg-listen", daemon=True)
        self._listener.start()

    async def close(self) -> None:
        self._listening = False
        if self._raw is not None:
            raw, self._raw = self._raw, None
            await self._call(raw.close)
        self._executor.shutdown(wait=False)


def _safe(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
