"""The release demo's tools do real work: files are copied, subprocesses run, manifests hash."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import pytest

from planners.demo.release_tools import GATED, SAMPLE_REPO, ReleaseTools


async def _installed(tools: ReleaseTools, path: str) -> dict[str, object]:
    """Install, absorbing the one deliberate flake."""
    try:
        return await tools.install(path)
    except ConnectionError:
        return await tools.install(path)


def test_tool_table_and_gate(tmp_path: Path) -> None:
    tools = ReleaseTools(tmp_path).tools()
    assert list(tools) == ["checkout", "install", "lint", "run_tests", "deploy"]
    assert frozenset({"deploy"}) == GATED
    assert tools.keys() >= GATED
    for name, fn in tools.items():
        assert inspect.iscoroutinefunction(fn), name
        assert fn.__doc__ and "\n" not in fn.__doc__.strip(), name


async def test_checkout_copies_the_repository(tmp_path: Path) -> None:
    tools = ReleaseTools(tmp_path)
    result = await tools.checkout("1.0.0")
    dest = Path(result["path"])
    assert dest == tmp_path.resolve() / "checkouts" / "1.0.0"
    for rel in ("README.md", "greeter/__init__.py", "tests/__init__.py", "tests/test_greeter.py"):
        assert (dest / rel).read_bytes() == (SAMPLE_REPO / rel).read_bytes()
    assert result["files"] == sum(1 for p in dest.rglob("*") if p.is_file()) >= 4
    assert not list(dest.rglob("__pycache__"))

    (dest / "stale.txt").write_text("left over")
    again = await tools.checkout("1.0.0")
    assert not (dest / "stale.txt").exists() and again["files"] == result["files"]


async def test_install_flakes_exactly_once_per_workdir(tmp_path: Path) -> None:
    path = (await ReleaseTools(tmp_path).checkout("1.0.0"))["path"]
    with pytest.raises(ConnectionError, match="try again"):
        await ReleaseTools(tmp_path).install(path)
    assert (tmp_path / ".install-flaked").exists()

    # A new instance (as after a process restart) on the same workdir does not flake again.
    fresh = ReleaseTools(tmp_path)
    result = await fresh.install(path)
    site = Path(result["site_packages"])
    assert site == tmp_path.resolve() / "build" / "1.0.0" / "site-packages"
    assert result["modules"] == 1
    assert (site / "greeter" / "__init__.py").is_file()
    assert list((site / "greeter" / "__pycache__").glob("__init__.*.pyc"))
    assert not (site / "tests").exists()
    assert (await fresh.install(path))["modules"] == 1

    # Another workdir flakes on its own.
    other = ReleaseTools(tmp_path / "other")
    other_path = (await other.checkout("1.0.0"))["path"]
    with pytest.raises(ConnectionError):
        await other.install(other_path)


async def test_lint_clean_then_long_line(tmp_path: Path) -> None:
    tools = ReleaseTools(tmp_path)
    path = (await tools.checkout("1.0.0"))["path"]
    assert await tools.lint(path) == {"ok": True, "problems": []}

    with (Path(path) / "greeter" / "__init__.py").open("a") as fh:
        fh.write("# " + "x" * 118 + "\n")
    result = await tools.lint(path)
    assert result["ok"] is False
    assert len(result["problems"]) == 1
    assert result["problems"][0].startswith("greeter/__init__.py:")
    assert "line too long (120 > 100)" in result["problems"][0]


async def test_lint_reports_syntax_errors_whitespace_and_tabs(tmp_path: Path) -> None:
    tools = ReleaseTools(tmp_path)
    path = Path((await tools.checkout("1.0.0"))["path"])
    (path / "greeter" / "bad.py").write_text("def f(:\n\tpass  \n")
    problems = (await tools.lint(str(path)))["problems"]
    text = "\n".join(problems)
    assert "greeter/bad.py:1: syntax error" in text
    assert "greeter/bad.py:2: trailing whitespace" in text
    assert "greeter/bad.py:2: tab character" in text


async def test_run_tests_passes_then_fails_when_broken(tmp_path: Path) -> None:
    tools = ReleaseTools(tmp_path)
    path = (await tools.checkout("1.0.0"))["path"]
    result = await tools.run_tests(path)
    assert result["ok"] is True and result["ran"] == 6
    assert "OK" in result["output"]

    module = Path(path) / "greeter" / "__init__.py"
    source = module.read_text()
    broken_source = source.replace('.upper() + "!"', '.lower() + "?!"')
    assert broken_source != source  # and its size differs, so no stale .pyc is reused
    module.write_text(broken_source)
    broken = await tools.run_tests(path)
    assert broken["ok"] is False and broken["ran"] == 6
    assert "FAILED" in broken["output"]
    assert len(broken["output"].splitlines()) <= 20


async def test_deploy_writes_a_matching_manifest(tmp_path: Path) -> None:
    tools = ReleaseTools(tmp_path)
    path = (await tools.checkout("1.0.0"))["path"]

    # Before install: the source package is deployed.
    result = await tools.deploy(path, "1.0.0")
    target = Path(result["target"])
    assert target == tmp_path.resolve() / "deploy" / "1.0.0"
    raw = (target / "MANIFEST.json").read_bytes()
    assert result["digest"] == hashlib.sha256(raw).hexdigest()
    manifest = json.loads(raw)
    assert manifest["version"] == "1.0.0"
    assert list(manifest["files"]) == ["greeter/__init__.py"] and result["files"] == 1
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((target / rel).read_bytes()).hexdigest() == digest

    # After install: the built site-packages is deployed, replacing the old target.
    await _installed(tools, path)
    (target / "junk").write_text("x")
    again = await tools.deploy(path, "1.0.0")
    assert not (target / "junk").exists()
    assert again["digest"] == result["digest"]  # same sources, caches excluded: reproducible


@pytest.mark.parametrize("version", ["", "../evil", "1.0 beta", "x" * 51, "a/b", "v1;rm"])
async def test_bad_versions_raise(tmp_path: Path, version: str) -> None:
    tools = ReleaseTools(tmp_path)
    with pytest.raises(ValueError, match="version"):
        await tools.checkout(version)
    path = (await tools.checkout("ok"))["path"]
    with pytest.raises(ValueError, match="version"):
        await tools.deploy(path, version)
    assert not (tmp_path / "deploy").exists()


async def test_bad_paths_raise(tmp_path: Path) -> None:
    work = tmp_path / "work"
    tools = ReleaseTools(work)
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = [str(outside), str(work / ".." / "outside"), "../outside", "", "/", "checkouts/none"]
    for name, fn in tools.tools().items():
        if name == "checkout":
            continue
        for path in bad:
            args = (path, "1.0") if name == "deploy" else (path,)
            with pytest.raises(ValueError, match="path"):
                await fn(*args)
    # Validation happens before the deliberate flake, so it is not used up by bad input.
    assert not (work / ".install-flaked").exists()

    # Relative paths inside the workdir are accepted.
    await tools.checkout("1.0")
    assert (await tools.lint("checkouts/1.0"))["ok"] is True
