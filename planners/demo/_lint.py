"""A tiny stdlib linter for the release demo: ``python -m planners.demo._lint PATH``.

Compiles every ``.py`` file under PATH (or PATH itself) and flags lines longer than 100
characters, trailing whitespace and tabs. Prints one problem per line as
``file:line: message`` and exits 0 when clean, 1 when there are problems, 2 on bad usage.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINE = 100
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", "venv", "build", "dist"})


def iter_sources(root: Path) -> Iterator[Path]:
    """Yield the Python files under ``root`` in a stable order, skipping caches and VCS dirs."""
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts[:-1]
        if not any(part in _SKIP_DIRS or part.startswith(".") for part in rel):
            yield path


def check_file(path: Path, shown: str) -> list[str]:
    """Return the problems found in one file, each formatted as ``shown:line: message``."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{shown}:1: cannot read file: {exc}"]
    problems: list[str] = []
    try:
        compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        problems.append(f"{shown}:{exc.lineno or 1}: syntax error: {exc.msg}")
    for number, line in enumerate(source.splitlines(), start=1):
        if len(line) > MAX_LINE:
            problems.append(f"{shown}:{number}: line too long ({len(line)} > {MAX_LINE})")
        if line != line.rstrip():
            problems.append(f"{shown}:{number}: trailing whitespace")
        if "\t" in line:
            problems.append(f"{shown}:{number}: tab character")
    return problems


def lint(root: Path) -> list[str]:
    """Return every problem under ``root``; paths are shown relative to ``root`` when a dir."""
    problems: list[str] = []
    for path in iter_sources(root):
        shown = path.name if root.is_file() else path.relative_to(root).as_posix()
        problems.extend(check_file(path, shown))
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m planners.demo._lint PATH", file=sys.stderr)
        return 2
    root = Path(args[0])
    if not root.exists():
        print(f"no such file or directory: {root}", file=sys.stderr)
        return 2
    problems = lint(root)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
