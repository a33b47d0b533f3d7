"""The storage backends the conformance suite runs against.

Every test that takes ``storage`` (or ``stores``/``backend``) runs once per entry of
``BACKENDS``. To add a backend, write a :class:`Backend` for it and add one line to
``BACKENDS``; a backend whose server is not available may ``pytest.skip`` in its constructor.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agentflow.storage import SqliteStorage, Storage


class Backend:
    """One test's store: hands out new handles on it and reaches it below the Protocol."""

    name: str

    def new(self) -> Storage:
        """A new, not yet opened handle on this test's store (the same store every call)."""
        raise NotImplementedError

    def read_meta(self, key: str) -> str | None:
        """The value of ``key`` in the store's ``meta`` table, read directly."""
        raise NotImplementedError

    def write_meta(self, key: str, value: str) -> None:
        """Set ``key`` in the store's ``meta`` table directly, as another program could."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Drop whatever the store left behind (the SQLite file goes with ``tmp_path``)."""


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    def new(self) -> Storage:
        return SqliteStorage(self.path)

    def read_meta(self, key: str) -> str | None:
        with sqlite3.connect(self.path) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        conn.close()
        return None if row is None else str(row[0])

    def write_meta(self, key: str, value: str) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )
        conn.close()


PG_URL_VARIABLE = "AGENTFLOW_TEST_PG_URL"


class PostgresBackend(Backend):
    """A fresh database per test on the server in $AGENTFLOW_TEST_PG_URL (``.ci/run`` starts
    one: scripts/pg-test-server); skipped when the variable is not set."""

    name = "postgres"
    _counter = 0

    def __init__(self, tmp_path: Path) -> None:
        admin = os.environ.get(PG_URL_VARIABLE)
        if not admin:
            pytest.skip(f"no PostgreSQL: set {PG_URL_VARIABLE} (scripts/pg-test-server start)")
        import psycopg

        self._psycopg = psycopg
        self.admin = admin
        PostgresBackend._counter += 1
        self.database = f"agentflow_t{os.getpid()}_{PostgresBackend._counter}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}"')
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self.url = admin.rsplit("/", 1)[0] + "/" + self.database

    def new(self) -> Storage:
        from agentflow.storage.postgres import PostgresStorage

        return PostgresStorage(self.url)

    def read_meta(self, key: str) -> str | None:
        with self._psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def write_meta(self, key: str, value: str) -> None:
        with self._psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) "
                         "DO UPDATE SET value = excluded.value", (key, value))

    def cleanup(self) -> None:
        with self._psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


# name -> how to make that backend's store for one test (given the test's tmp_path).
BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "sqlite": SqliteBackend,
    "postgres": PostgresBackend,
}


class Stores:
    """Opens handles on one test's store (a second worker, a reopen) and closes them all at
    teardown."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._open: list[Storage] = []

    async def open(self) -> Storage:
        storage = self.backend.new()
        await storage.open()
        self._open.append(storage)
        return storage

    async def close(self, storage: Storage) -> None:
        self._open.remove(storage)
        await storage.close()

    async def close_all(self) -> None:
        while self._open:
            await self._open.pop().close()


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.cleanup()


@pytest.fixture
async def stores(backend: Backend) -> AsyncIterator[Stores]:
    opened = Stores(backend)
    yield opened
    await opened.close_all()


@pytest.fixture
async def storage(stores: Stores) -> Storage:
    """An opened handle on a fresh store; closed at teardown."""
    return await stores.open()
