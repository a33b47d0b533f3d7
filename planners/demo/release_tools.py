"""Real, local effects for the offline release-pipeline demo, exposed as LLM-callable tools.

Each public ``async`` method of :class:`ReleaseTools` is one tool: its docstring is the
description a model sees and its type hints are the argument schema. Everything happens under
``workdir`` with real file copies and real subprocesses; ``install`` fails exactly once per
workdir (durably, via a marker file) so the demo can show a retried step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

GATED = frozenset({"deploy"})
"""Tools that need a person's approval before they run."""

SAMPLE_REPO = Path(__file__).resolve().parent / "sample_repo"
_VERSION = re.compile(r"[A-Za-z0-9._-]{1,50}")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")
_TIMEOUT = 60.0
_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the agentflow package

Tool = Callable[..., Awaitable[dict[str, Any]]]


async def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python *args`` without blocking the loop; return (exit code, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), _TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"{' '.join(args)} took longer than {_TIMEOUT:.0f}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def _packages(checkout: Path) -> list[Path]:
    """The top-level Python packages of a checkout (``tests`` excluded)."""
    return sorted(
        p
        for p in checkout.iterdir()
        if p.is_dir() and p.name != "tests" and (p / "__init__.py").is_file()
    )


def _replace_tree(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=_IGNORE)


class ReleaseTools:
    """The release tools, confined to ``workdir``; ``source`` is the repository being released."""

    def __init__(self, workdir: Path, *, source: Path | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.source = Path(source).resolve() if source is not None else SAMPLE_REPO
        self.workdir.mkdir(parents=True, exist_ok=True)

    def tools(self) -> dict[str, Tool]:
        """The five tools by name, as bound methods."""
        return {
            "checkout": self.checkout,
            "install": self.install,
            "lint": self.lint,
            "run_tests": self.run_tests,
            "deploy": self.deploy,
        }

    # -- validation ---------------------------------------------------------------------------

    def _path(self, path: str) -> Path:
        if not isinstance(path, str) or not path:
            raise ValueError("path must be a non-empty string")
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.workdir / candidate
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.workdir):
            raise ValueError(f"path {path!r} is outside the work directory {self.workdir}")
        if not resolved.is_dir():
            raise ValueError(f"path {path!r} is not an existing directory")
        return resolved

    @staticmethod
    def _version(version: str) -> str:
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise ValueError(
                f"version {version!r} is invalid: use 1-50 characters from A-Z a-z 0-9 . _ -"
            )
        return version

    # -- tools --------------------------------------------------------------------------------

    async def checkout(self, version: str) -> dict[str, Any]:
        """Check out the repository at `version` into a fresh directory; returns its path."""
        dest = self.workdir / "checkouts" / self._version(version)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_replace_tree, self.source, dest)
        return {"path": str(dest), "files": await asyncio.to_thread(_count_files, dest)}

    async def install(self, path: str) -> dict[str, Any]:
        """Install the checkout at `path` into its own site-packages and byte-compile it."""
        checkout = self._path(path)
        marker = self.workdir / ".install-flaked"
        if not marker.exists():
            marker.write_text("the package index timed out once here\n", encoding="utf-8")
            raise ConnectionError("package index timed out; try again")
        packages = _packages(checkout)
        if not packages:
            raise ValueError(f"no Python package found in {checkout}")
        site = self.workdir / "build" / checkout.name / "site-packages"
        if site.exists():
            await asyncio.to_thread(shutil.rmtree, site)
        site.mkdir(parents=True)
        for package in packages:
            await asyncio.to_thread(_replace_tree, package, site / package.name)
        code, output = await _run("-m", "compileall", "-q", str(site), cwd=self.workdir)
        if code != 0:
            raise RuntimeError(f"byte-compilation failed:\n{output.strip()}")
        modules = sum(1 for p in site.rglob("*.py") if "__pycache__" not in p.parts)
        return {"site_packages": str(site), "modules": modules}

    async def lint(self, path: str) -> dict[str, Any]:
        """Lint the Python files at `path` (syntax, long lines, whitespace, tabs)."""
        target = self._path(path)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        code, output = await _run(
            "-m", "planners.demo._lint", str(target), cwd=self.workdir, env=env
        )
        if code not in (0, 1):
            raise RuntimeError(f"linter failed (exit {code}):\n{output.strip()}")
        return {"ok": code == 0, "problems": [ln for ln in output.splitlines() if ln.strip()]}

    async def run_tests(self, path: str) -> dict[str, Any]:
        """Run the unit tests of the checkout at `path`; returns pass/fail and a summary."""
        checkout = self._path(path)
        code, output = await _run(
            "-m", "unittest", "discover", "-s", "tests", "-t", ".", cwd=checkout
        )
        found = re.search(r"^Ran (\d+) tests?", output, re.MULTILINE)
        lines = output.rstrip().splitlines()
        return {
            "ok": code == 0,
            "ran": int(found.group(1)) if found else 0,
            "output": "\n".join(lines[-20:]),
        }

    async def deploy(self, path: str, version: str) -> dict[str, Any]:
        """Deploy the checkout at `path` as `version`, with a sha256 manifest of every file."""
        checkout = self._path(path)
        target = self.workdir / "deploy" / self._version(version)
        site = self.workdir / "build" / checkout.name / "site-packages"
        packages = _packages(site) if site.is_dir() else _packages(checkout)
        if not packages:
            raise ValueError(f"nothing to deploy: no Python package found in {checkout}")
        return await asyncio.to_thread(self._deploy_files, packages, target, version)

    @staticmethod
    def _deploy_files(packages: list[Path], target: Path, version: str) -> dict[str, Any]:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for package in packages:
            shutil.copytree(package, target / package.name, ignore=_IGNORE)
        files = {
            p.relative_to(target).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(target.rglob("*"))
            if p.is_file()
        }
        manifest = json.dumps({"version": version, "files": files}, indent=2, sort_keys=True)
        (target / "MANIFEST.json").write_text(manifest + "\n", encoding="utf-8")
        digest = hashlib.sha256((manifest + "\n").encode("utf-8")).hexdigest()
        return {"target": str(target), "files": len(files), "digest": digest}
