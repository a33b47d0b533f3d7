"""The README's main job, run as a user runs it: a real process, interrupted and resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "planners.demo", "--db", f"sqlite:///{tmp_path / 'demo.db'}",
         "--workdir", str(tmp_path / "work"), *args],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} never appeared; output:\n{''.join(seen)}")


def journal(tmp_path: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(tmp_path / "demo.db") as db:
        rows = db.execute("SELECT name, state, attempts FROM steps").fetchall()
    return {name: (state, attempts) for name, state, attempts in rows}


def started_count(tmp_path: Path, step: str) -> int:
    """How often the feed says ``step`` started: its step.started entries, written as history
    rows or (a step finished at its first attempt) stood for by its journal row."""
    with sqlite3.connect(tmp_path / "demo.db") as db:
        (n,) = db.execute(
            "SELECT (SELECT count(*) FROM history WHERE step = ? AND (type = 'step.started' "
            "OR since IS NOT NULL)) + (SELECT count(*) FROM steps WHERE name = ? AND "
            "hseq IS NOT NULL)", (step, step)).fetchone()
    return int(n)


def test_the_main_job_releases_offline_from_the_cassette(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--yes")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "round 1 sent back: approval-missing, import-not-allowed" in out
    assert "↻ install: attempt 1 failed" in out  # the flaky step is retried
    target = tmp_path / "work" / "deploy" / "1.4.0"
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert manifest and (target / "greeter" / "__init__.py").exists()
    assert all(state == "completed" for state, _ in journal(tmp_path).values())


def test_ctrl_c_then_start_again_resumes_instead_of_restarting(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--yes")
    # Interrupted while the retried install hibernates before its second attempt.
    read_until(proc, "↻ install: attempt 1 failed")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "run the same command again to resume" in out
    assert journal(tmp_path)["check out"] == ("completed", 1)
    assert "deploy" not in journal(tmp_path)

    again = demo(tmp_path, "--yes")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    assert "plan by" not in out  # resumed: the model was not asked for a new plan
    steps = journal(tmp_path)
    assert steps["check out"] == ("completed", 1)
    assert started_count(tmp_path, "check out") == 1  # never ran a second time
    assert steps["install"] == ("completed", 2)
    assert steps["deploy"][0] == "completed"


@pytest.mark.parametrize("answer, released", [("y\n", True), ("n\n", False)])
def test_the_approval_prompt_decides(tmp_path: Path, answer: str, released: bool) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AGENTFLOW_DEMO_PROMPT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "planners.demo", "--db", f"sqlite:///{tmp_path / 'demo.db'}",
         "--workdir", str(tmp_path / "work"), "--model", "scripted"],
        cwd=ROOT, env=env, input=answer, capture_output=True, text=True, timeout=120,
    )
    assert "approve? [y/N]" in proc.stdout
    assert (tmp_path / "work" / "deploy" / "1.4.0").exists() is released
    assert proc.returncode == (0 if released else 1), proc.stdout + proc.stderr
    assert ('"status": "released"' if released else '"status": "rejected"') in proc.stdout


def test_an_approval_from_the_cli_releases_the_waiting_demo(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AGENTFLOW_DEMO_PROMPT": "1"}
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "planners.demo", "--db", db, "--workdir", str(tmp_path / "work"),
         "--model", "scripted"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        read_until(proc, "(or from another terminal: agentflow")
        listed = subprocess.run(
            [sys.executable, "-m", "agentflow.cli", "--db", db, "--json", "approvals",
             "--tenant", "demo"], capture_output=True, text=True, timeout=60, check=True)
        (request,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert request["gate"] == "approve deploy" and request["instance_id"].endswith(
            "release-1_4_0")
        subprocess.run(
            [sys.executable, "-m", "agentflow.cli", "--db", db, "approve", "release-1_4_0",
             "approve deploy", "--tenant", "demo", "--by", "cli-user",
             "--version", request["version"], "--comment", "from the other terminal"],
            capture_output=True, text=True, timeout=60, check=True)
        out, _ = proc.communicate(timeout=120)  # stdin stays unanswered
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "decided from elsewhere" in out
    assert "approve deploy: approved by cli-user (from the other terminal)" in out
    assert '"approved_by": "cli-user"' in out
