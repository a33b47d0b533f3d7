"""The SQLite schema: created on open, and migrated in place from any older version."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from ..errors import StorageError
from ._feed import init_counter
from ._statements import SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file at ``path`` (open on ``conn``, in a write transaction) to
    ``SCHEMA_VERSION``; refuse a newer one."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path} has schema version {version}, newer than this agentflow "
            f"({SCHEMA_VERSION}); upgrade agentflow to open it"
        )
    if version < 1:
        script = resources.files("agentflow.storage").joinpath("schema.sql").read_text()
        script = re.sub(r"--[^\n]*", "", script)
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    if version < 2:  # 2: open waits indexed, for the approval inbox
        conn.execute("CREATE INDEX IF NOT EXISTS steps_open_waits ON steps (event_type) "
                     "WHERE state = 'waiting'")
    if version < 3:  # 3: each tenant's queue indexed, for fair claims
        conn.execute("CREATE INDEX IF NOT EXISTS instances_by_tenant ON instances "
                     "(workflow, status, tenant, sched)")
    if 1 <= version < 4:  # 4: the queue index carries the tenant (fair claims read it)
        conn.execute("DROP INDEX IF EXISTS instances_schedule")
        conn.execute("CREATE INDEX instances_schedule ON instances "
                     "(workflow, status, sched, tenant)")
    if version < 5:  # 5: journal rows stand for their step's entry in the feed
        if "hseq" not in {row[1] for row in conn.execute("PRAGMA table_info(steps)")}:
            conn.execute("ALTER TABLE steps ADD COLUMN hseq INTEGER")
        init_counter(conn)
    if version < 6:  # 6: the tenants' index holds tenants' rows only; untenanted queues
        # have an index of their own (a row without a tenant, running or waiting, is in
        # neither: its status changes write one index fewer); ids are found through the
        # (workflow, id) index, not one on ids alone (a create writes one index fewer)
        conn.execute("DROP INDEX IF EXISTS instances_by_id")
        conn.execute("DROP INDEX IF EXISTS instances_by_tenant")
        conn.execute("CREATE INDEX instances_by_tenant ON instances "
                     "(workflow, status, tenant, sched) WHERE tenant IS NOT NULL")
        conn.execute("CREATE INDEX IF NOT EXISTS instances_untenanted_queue ON instances "
                     "(workflow, status, sched) WHERE status = 'queued' AND tenant IS NULL")
    if version < SCHEMA_VERSION:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
