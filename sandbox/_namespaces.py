"""What a plan may import: curated namespaces of vetted names, never module objects.

A module object leads back to the interpreter (``json.decoder.sys``...) through attributes
without an underscore; a namespace here holds only the listed functions, classes and constants.
"""

from __future__ import annotations

import collections
import datetime
import functools
import importlib
import itertools
import json
import math
import random
import re
import statistics
import string
import uuid
from types import ModuleType
from typing import Any


class Namespace:
    """A read-only bag of names; the only attributes are the vetted ones."""

    __slots__ = ("_module_name", "_names")

    def __init__(self, module_name: str, names: dict[str, Any]) -> None:
        object.__setattr__(self, "_module_name", module_name)
        object.__setattr__(self, "_names", dict(names))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._names[name]
        except KeyError:
            raise AttributeError(
                f"{self._module_name}.{name} is not available to plans"
            ) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self._module_name} is read-only")

    def __dir__(self) -> list[str]:
        return sorted(self._names)

    def __repr__(self) -> str:
        return f"<plan namespace {self._module_name}>"


def _pick(module: ModuleType, names: str) -> dict[str, Any]:
    return {name: getattr(module, name) for name in names.split()}


def _public_math() -> dict[str, Any]:
    return {n: getattr(math, n) for n in dir(math) if not n.startswith("_")}


_TABLE: dict[str, dict[str, Any]] = {
    "json": _pick(json, "loads dumps JSONDecodeError"),
    "math": _public_math(),
    "re": _pick(re, "compile search match fullmatch findall finditer sub subn split escape "
                    "IGNORECASE MULTILINE DOTALL VERBOSE ASCII I M S X A error"),
    "datetime": _pick(datetime, "datetime date time timedelta timezone MINYEAR MAXYEAR"),
    "random": _pick(random, "random randint randrange choice choices shuffle sample uniform "
                            "gauss"),
    "uuid": _pick(uuid, "uuid4 uuid5 uuid3 UUID NAMESPACE_DNS NAMESPACE_URL NAMESPACE_OID "
                        "NAMESPACE_X500"),
    "statistics": _pick(statistics, "mean median median_low median_high mode multimode "
                                    "stdev pstdev variance pvariance quantiles fmean "
                                    "StatisticsError"),
    "itertools": _pick(itertools, "accumulate chain combinations combinations_with_replacement "
                                  "compress count cycle dropwhile filterfalse groupby islice "
                                  "pairwise permutations product repeat starmap takewhile "
                                  "zip_longest"),
    "functools": _pick(functools, "reduce partial cmp_to_key"),
    "collections": _pick(collections, "Counter defaultdict OrderedDict deque"),
    "string": _pick(string, "ascii_letters ascii_lowercase ascii_uppercase digits hexdigits "
                            "octdigits punctuation whitespace printable capwords"),
}

NAMESPACES: dict[str, Namespace] = {name: Namespace(name, names) for name, names in _TABLE.items()}


_FOR_THE_STANDARD_LIBRARY = frozenset({"time", "_strptime"})


def importer(allowed: frozenset[str]) -> Any:
    """The ``__import__`` a plan runs with: curated namespaces of allowed modules only."""

    def plan_import(
        name: str, globals: object = None, locals: object = None,
        fromlist: Any = (), level: int = 0,
    ) -> Any:
        if not level and name in _FOR_THE_STANDARD_LIBRARY and type(fromlist) is list:
            # C code (datetime.strftime, strptime) imports these through the builtins of the
            # frame that calls it, passing a list as fromlist; an import statement in a plan
            # passes None or a tuple (and cannot name these modules), so the real module goes
            # only to C code.
            return importlib.import_module(name)
        if level or name not in allowed or name not in NAMESPACES:
            raise ImportError(f"plans cannot import {name!r}")
        return NAMESPACES[name]

    return plan_import
