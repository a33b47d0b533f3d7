"""The notebook in notebooks/ runs an agent to its gate and approves it from the widget;
executed here offline with a real kernel (nbclient)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "approvals.ipynb"


@pytest.mark.timeout(180)
def test_the_notebook_approves_the_deploy_from_the_widget(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "notebook.db"
    monkeypatch.setenv("AGENTFLOW_NOTEBOOK_DB", f"sqlite:///{db}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ})  # raises CellExecutionError if any cell fails
    outputs = "".join(
        str(out.get("text", "")) for cell in notebook.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "complete" in outputs and "is live on production" in outputs
    # the outcome is in the database the notebook used, not only in its printout
    with sqlite3.connect(db) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM instances")]
        decided = conn.execute(
            "SELECT data FROM history WHERE type = 'approval.decided'").fetchall()
    assert statuses == ["complete"]
    assert len(decided) == 1 and json.loads(decided[0][0])["approved"] is True
    widget_outputs = [out for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", [])
                      if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert widget_outputs, "the inbox was displayed as a widget"
