"""Tests for the greeter package (stdlib unittest)."""

from __future__ import annotations

import unittest

# mypy run from the agentflow repo sees this file, but not the sample project root.
from greeter import greet, initials, shout  # type: ignore[import-not-found, unused-ignore]


class GreetTests(unittest.TestCase):
    def test_greets_by_name(self) -> None:
        self.assertEqual(greet("Ada"), "Hello, Ada!")

    def test_blank_name_greets_the_world(self) -> None:
        self.assertEqual(greet("   "), "Hello, world!")


class ShoutTests(unittest.TestCase):
    def test_upper_cases(self) -> None:
        self.assertEqual(shout("ship it"), "SHIP IT!")

    def test_single_exclamation_mark(self) -> None:
        self.assertEqual(shout("done!!"), "DONE!")


class InitialsTests(unittest.TestCase):
    def test_initials(self) -> None:
        self.assertEqual(initials("Ada King Lovelace"), "AKL")

    def test_empty(self) -> None:
        self.assertEqual(initials(""), "")


if __name__ == "__main__":
    unittest.main()
