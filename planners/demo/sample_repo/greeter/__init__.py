"""Friendly string helpers: the package the release pipeline demo ships."""

from __future__ import annotations

__all__ = ["greet", "initials", "shout"]


def greet(name: str) -> str:
    """Return a greeting for ``name``, or for the world when the name is blank."""
    name = name.strip()
    return f"Hello, {name or 'world'}!"


def shout(text: str) -> str:
    """Return ``text`` in upper case with a single exclamation mark at the end."""
    return text.strip().rstrip("!").upper() + "!"


def initials(full_name: str) -> str:
    """Return the upper-case initials of ``full_name``, e.g. ``"Ada Lovelace"`` -> ``"AL"``."""
    return "".join(part[0].upper() for part in full_name.split())
