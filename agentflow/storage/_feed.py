"""An instance's feed on SQLite: its history rows, and the finished steps that stand for their
own 'step.completed' entry.

Most steps finish at their first attempt, quickly; their entry in the feed (a compact
'step.completed', read as step.started, attempt.started and step.completed) says nothing the
journal row does not: name, occurrence, start and end. Writing it as a history row too cost
a tenth of a busy worker's work (W(1000x10), counted in instructions), so the journal row
carries the entry's place in the feed instead (``steps.hseq``), and the feed reads both
tables.

Places in the feed are one sequence for both tables: history rows take theirs as explicit
``seq`` values, steps their ``hseq``, from a counter kept in ``meta`` (``feed_seq``, the next
free place). The counter is read once per commit, inside it (SQLite has one writer), as the
larger of its stored value and the history's next ``seq``; it is written back before the
commit ends when a step took a place, since only steps' places are missing from that
``seq``. (A commit of history rows alone, such as a create, writes one page less.)
PostgreSQL keeps writing history rows for every entry.
"""

from __future__ import annotations

from typing import Any

from ._statements import _INSERT_HISTORY

COUNTER_KEY = "feed_seq"

# A history row at a place of the feed: its place, then ``_history_row``'s values.
INSERT_HISTORY_AT = _INSERT_HISTORY.replace("(iid,", "(seq, iid,", 1).replace(
    "VALUES (", "VALUES (?, ", 1)

# The feed of one instance after a place: history rows and steps that stand for their entry.
READ = (
    "SELECT f.seq, f.iid, i.workflow, i.id, f.type, f.at, f.step, f.data, f.count, f.attempt, "
    "f.since FROM ("
    " SELECT seq, iid, type, at, step, data, count, attempt, since FROM history"
    " WHERE iid = ? AND seq > ?"
    " UNION ALL"
    " SELECT hseq, iid, 'step.completed', finished_at, name, NULL, count, 1, started_at"
    " FROM steps WHERE iid = ? AND hseq > ?"
    ") f JOIN instances i ON i.iid = f.iid ORDER BY f.seq LIMIT ?"
)

# Before journal rows are deleted (a restart), the entries they stand for become history rows,
# in the same places.
KEEP_ENTRIES = (
    "INSERT INTO history (seq, iid, at, type, step, count, attempt, since, data) "
    "SELECT hseq, iid, finished_at, 'step.completed', name, count, 1, started_at, NULL "
    "FROM steps WHERE iid = ? AND seq >= ? AND hseq IS NOT NULL"
)


class FeedCounter:
    """Hands out places in the feed during one commit (see the module's docstring)."""

    __slots__ = ("_conn", "_next", "_read", "_stepped")

    def __init__(self) -> None:
        self._conn: Any = None
        self._next = 0
        self._read = 0  # the counter's value in the database; 0: not read in this commit
        self._stepped = False  # a step took a place in this commit

    def begin(self, conn: Any) -> None:
        self._conn, self._read, self._stepped = conn, 0, False

    def take(self, n: int = 1, *, step: bool = False) -> int:
        """The first of ``n`` consecutive places (inside a write unit); ``step``: one of
        them is (or may be) a step's rather than a history row's."""
        self._stepped = self._stepped or step
        if not self._read:
            # Never below the history's own next rowid: a writer that numbers rows the
            # SQLite way (a process of an older agentflow still open on the file) cannot
            # make every later commit fail on a taken place.
            (value,) = self._conn.execute(
                "SELECT max(CAST(value AS INTEGER), (SELECT coalesce(max(seq), 0) + 1 "
                "FROM history)) FROM meta WHERE key = ?", (COUNTER_KEY,)).fetchone()
            self._next = self._read = int(value)
        first = self._next
        self._next += n
        return first

    def before_commit(self, conn: Any) -> None:
        if self._stepped and self._next != self._read:
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(self._next), COUNTER_KEY))

    def end(self) -> None:
        self._conn, self._read, self._stepped = None, 0, False


def init_counter(conn: Any) -> None:
    """For the migration: the counter starts after every place used so far."""
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) SELECT ?, CAST(COALESCE(max(seq), 0) + 1 "
        "AS TEXT) FROM history", (COUNTER_KEY,))
