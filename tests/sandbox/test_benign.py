"""Realistic, well-behaved plans: accepted by ``validate`` and right when run in this process
through the real engine (SQLite file, fake clock)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import agentflow as af
import sandbox
from tests.conftest import drive, wait_for
from tests.sandbox._harness import plan


@dataclass
class Host:
    """Tools a benign plan is granted, and what they saw."""

    calls: list[list[Any]] = field(default_factory=list)
    failures_left: int = 0
    catalogue: dict[str, Any] = field(default_factory=lambda: {
        "orders": [
            {"id": "A-1", "customer": "ada", "amount": 12.5, "placed": "2024-03-01T10:00:00"},
            {"id": "A-2", "customer": "bob", "amount": 7.25, "placed": "2024-03-02T11:30:00"},
            {"id": "A-3", "customer": "ada", "amount": 30.0, "placed": "2024-03-05T09:15:00"},
        ],
    })

    def list_orders(self, status: str = "open") -> list[dict[str, Any]]:
        self.calls.append(["list_orders", status])
        orders: list[dict[str, Any]] = self.catalogue["orders"]
        return orders

    def send_email(self, to: str, subject: str, body: str) -> dict[str, Any]:
        self.calls.append(["send_email", to, subject, body])
        return {"sent": True, "to": to}

    def flaky(self, n: int) -> int:
        self.calls.append(["flaky", n])
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionError("upstream unavailable")
        return n * 2

    async def lookup(self, key: str) -> dict[str, Any]:
        self.calls.append(["lookup", key])
        await asyncio.sleep(0)
        return {"key": key, "value": len(key)}

    def record(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append(["record", list(args), kwargs])
        return len(self.calls)

    def tools(self) -> dict[str, Callable[..., Any]]:
        return {"list_orders": self.list_orders, "send_email": self.send_email,
                "flaky": self.flaky, "lookup": self.lookup, "record": self.record}


async def start(
    engine: af.Engine, source: str, host: Host | None = None, params: Any = None,
    printed: list[str] | None = None,
) -> af.Instance:
    host = host or Host()
    names = list(host.tools())
    report = sandbox.validate(source, tools=names)
    assert report.ok, str(report)
    compiled = sandbox.compile_plan(source, tools=names)
    sink = printed.append if printed is not None else None
    runner = compiled.load(tools=host.tools(), print_sink=sink)
    return await engine.register("plan", runner).create(params=params)


async def finish(
    engine: af.Engine, clock: af.FakeClock, source: str, host: Host | None = None,
    params: Any = None, printed: list[str] | None = None,
) -> af.InstanceDetails:
    instance = await start(engine, source, host, params, printed)
    return await drive(engine, clock, instance)


ORDER_REPORT = plan('''
    """Summarise open orders per customer and mail the summary."""
    import datetime
    import json
    import math
    import re

    CURRENCY = "EUR"


    def money(amount):
        return f"{amount:,.2f} {CURRENCY}"


    def summarise(orders, since):
        per_customer = {}
        for order in orders:
            placed = datetime.datetime.fromisoformat(order["placed"])
            if placed < since:
                continue
            entry = per_customer.setdefault(order["customer"], {"count": 0, "total": 0.0})
            entry["count"] = entry["count"] + 1
            entry["total"] = entry["total"] + order["amount"]
        return per_customer


    async def run(event, step):
        orders = await step.do("list open orders", lambda: tools.list_orders("open"))
        since = datetime.datetime.fromisoformat(event.payload["since"])
        summary = summarise(orders, since)
        lines = [
            f"{name}: {info['count']} order(s), {money(info['total'])}"
            for name, info in sorted(summary.items())
        ]
        biggest = max((o for o in orders), key=lambda o: o["amount"])
        ids = [int(re.sub(r"\\D", "", o["id"])) for o in orders]
        body = "\\n".join(lines)
        sent = await step.do(
            "mail summary",
            lambda: tools.send_email(event.payload["to"], "Open orders", body),
        )
        return {
            "lines": lines,
            "biggest": biggest["id"],
            "ids": ids,
            "ceil_total": math.ceil(sum(o["amount"] for o in orders)),
            "sent": sent["sent"],
            "json": json.dumps(summary, sort_keys=True),
        }
''')


async def test_a_realistic_plan_runs_end_to_end(engine: af.Engine, clock: af.FakeClock) -> None:
    host = Host()
    details = await finish(engine, clock, ORDER_REPORT, host,
                           params={"since": "2024-03-02T00:00:00", "to": "ops@example.com"})
    assert details.status == "complete", details.error
    assert details.output == {
        "lines": ["ada: 1 order(s), 30.00 EUR", "bob: 1 order(s), 7.25 EUR"],
        "biggest": "A-3",
        "ids": [1, 2, 3],
        "ceil_total": 50,
        "sent": True,
        "json": json.dumps({"ada": {"count": 1, "total": 30.0},
                            "bob": {"count": 1, "total": 7.25}}, sort_keys=True),
    }
    assert host.calls[-1] == ["send_email", "ops@example.com", "Open orders",
                              "ada: 1 order(s), 30.00 EUR\nbob: 1 order(s), 7.25 EUR"]


PARALLEL = plan('''
    async def enrich(step, key):
        found = await step.do(f"lookup {key}", lambda: tools.lookup(key))
        return {"key": key, "size": found["value"]}


    def double(x):
        return x * 2


    async def run(event, step):
        keys = event.payload["keys"]
        enriched = await step.all(*[enrich(step, k) for k in keys])
        doubled = await step.all(
            step.do("double a", lambda: double(1)),
            step.do("double b", lambda: double(2)),
        )
        return {"enriched": enriched, "doubled": doubled}
''')


async def test_async_helpers_and_step_all(engine: af.Engine, clock: af.FakeClock) -> None:
    host = Host()
    details = await finish(engine, clock, PARALLEL, host, params={"keys": ["a", "bbb", "cc"]})
    assert details.status == "complete", details.error
    assert details.output == {
        "enriched": [{"key": "a", "size": 1}, {"key": "bbb", "size": 3},
                     {"key": "cc", "size": 2}],
        "doubled": [2, 4],
    }
    assert sorted(c[1] for c in host.calls if c[0] == "lookup") == ["a", "bbb", "cc"]


SLEEPY = plan('''
    import datetime


    async def run(event, step):
        first = await step.do("first", lambda: "one")
        await step.sleep("cool down", "2 hours")
        later = event.timestamp + datetime.timedelta(days=1)
        await step.sleep_until("tomorrow", later)
        second = await step.do("second", lambda: "two")
        return [first, second]
''')


async def test_sleeps_hibernate_on_the_fake_clock(engine: af.Engine, clock: af.FakeClock) -> None:
    start_at = clock.now()
    details = await finish(engine, clock, SLEEPY)
    assert details.status == "complete", details.error
    assert details.output == ["one", "two"]
    assert clock.now() >= start_at + 86400


WAITER = plan('''
    async def run(event, step):
        approval = await step.wait_for_event("approval", type="approve", timeout="1 day")
        who = approval.payload["by"]
        note = await step.do("note", lambda: tools.record(who))
        return {"by": who, "type": approval.type, "note": note > 0}
''')


async def test_wait_for_event_receives_the_payload(engine: af.Engine, clock: af.FakeClock) -> None:
    instance = await start(engine, WAITER)
    await wait_for(instance, "waiting")
    await instance.send_event("approve", {"by": "ada"})
    details = await wait_for(instance, "complete", "errored")
    assert details.status == "complete", details.error
    assert details.output == {"by": "ada", "type": "approve", "note": True}


async def test_an_event_sent_early_is_buffered(engine: af.Engine, clock: af.FakeClock) -> None:
    instance = await start(engine, WAITER)
    await instance.send_event("approve", {"by": "bob"})
    details = await drive(engine, clock, instance)
    assert details.status == "complete", details.error
    assert details.output["by"] == "bob"


TIMEOUT = plan('''
    async def run(event, step):
        try:
            await step.wait_for_event("approval", type="approve", timeout="1 hour")
        except Exception as e:
            return "timed out: " + str(e)[:30]
        return "approved"
''')


async def test_an_event_timeout_can_be_caught(engine: af.Engine, clock: af.FakeClock) -> None:
    details = await finish(engine, clock, TIMEOUT)
    assert details.status == "complete", details.error
    assert details.output.startswith("timed out: ")


ERRORS = plan('''
    def parse(text):
        try:
            return int(text)
        except ValueError:
            return None


    async def run(event, step):
        seen = []
        try:
            {}["missing"]
        except KeyError as e:
            seen.append("key " + str(e))
        try:
            1 / 0
        except ZeroDivisionError:
            seen.append("zero")
        except Exception:
            seen.append("wrong handler")
        try:
            raise ValueError("bad input")
        except (TypeError, ValueError) as e:
            seen.append(str(e))
        finally:
            seen.append("finally")
        seen.append(parse("12"))
        seen.append(parse("x"))
        if event.payload.get("fail"):
            raise RuntimeError("the plan gave up")
        return seen
''')


async def test_exceptions_inside_plans(engine: af.Engine, clock: af.FakeClock) -> None:
    details = await finish(engine, clock, ERRORS, params={"fail": False})
    assert details.status == "complete", details.error
    assert details.output == ["key 'missing'", "zero", "bad input", "finally", 12, None]


async def test_an_uncaught_exception_errors_the_instance(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    details = await finish(engine, clock, ERRORS, params={"fail": True})
    assert details.status == "errored"
    assert details.error is not None
    assert (details.error.name, details.error.message) == ("RuntimeError", "the plan gave up")


RETRIES = plan('''
    async def run(event, step):
        value = await step.do("flaky call", lambda: tools.flaky(21))
        try:
            await step.do("always failing", lambda: 1 / 0)
        except ZeroDivisionError as e:
            return {"value": value, "caught": str(e)}
        return {"value": value}
''')


async def test_failing_steps_are_retried_then_caught(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    host = Host(failures_left=2)
    details = await finish(engine, clock, RETRIES, host)
    assert details.status == "complete", details.error
    assert details.output == {"value": 42, "caught": "division by zero"}
    assert [c for c in host.calls if c[0] == "flaky"] == [["flaky", 21]] * 3


NONDETERMINISM = plan('''
    import datetime
    import random
    import uuid


    async def run(event, step):
        picked = await step.do("pick", lambda: random.randint(1, 10**9))
        ident = await step.do("id", lambda: str(uuid.uuid4()))
        utc = datetime.timezone.utc
        when = await step.do("now", lambda: datetime.datetime.now(utc).isoformat())
        await step.do("note", lambda: tools.record(picked, ident, when))
        await step.sleep("nap", 60)  # the next run replays the three values from the journal
        return {"picked": picked, "id": ident, "when": when}
''')


async def test_random_uuid_and_now_inside_steps_replay_stably(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    host = Host()
    details = await finish(engine, clock, NONDETERMINISM, host)
    assert details.status == "complete", details.error
    out = details.output
    assert [c for c in host.calls if c[0] == "record"] == [
        ["record", [out["picked"], out["id"], out["when"]], {}]
    ]
    assert len(out["id"]) == 36 and 1 <= out["picked"] <= 10**9
    assert out["when"].endswith("+00:00")


CONTEXT = plan('''
    async def run(event, step):
        return await step.do("ctx", lambda ctx: [ctx.name, ctx.count, ctx.attempt])
''')


async def test_a_step_body_can_take_its_context(engine: af.Engine, clock: af.FakeClock) -> None:
    details = await finish(engine, clock, CONTEXT)
    assert details.output == ["ctx", 1, 1]


COPIES = plan('''
    async def run(event, step):
        orders = await step.do("orders", lambda: tools.list_orders())
        orders[0]["amount"] = -1
        orders.append({"id": "forged"})
        return len(orders)
''')


async def test_tool_results_are_copies(engine: af.Engine, clock: af.FakeClock) -> None:
    host = Host()
    details = await finish(engine, clock, COPIES, host)
    assert details.output == 4
    assert [o["amount"] for o in host.catalogue["orders"]] == [12.5, 7.25, 30.0]


PRINTS = plan('''
    async def run(event, step):
        print("hello", "world", sep=", ", end="!\\n")
        for i in range(3):
            print(f"line {i}")
        print("x" * 200000)
        print("after the cut")
        return "done"
''')


async def test_print_lands_in_the_sink_and_is_bounded(
    engine: af.Engine, clock: af.FakeClock
) -> None:
    printed: list[str] = []
    details = await finish(engine, clock, PRINTS, printed=printed)
    assert details.status == "complete", details.error
    assert printed[:4] == ["hello, world!\n", "line 0\n", "line 1\n", "line 2\n"]
    text = "".join(printed)
    assert len(text.encode()) <= 64 * 1024 + 100
    assert "truncated" in printed[-1]
    assert "after the cut" not in text


LIBRARIES: list[tuple[str, str, Any]] = [
    ("json", "json.loads(json.dumps({'a': [1, 2.5, None, True]}))",
     {"a": [1, 2.5, None, True]}),
    ("math", "[math.sqrt(16), math.floor(2.5), round(math.pi, 2), math.isclose(0.1 + 0.2, 0.3)]",
     [4.0, 2, 3.14, True]),
    ("re-named-groups", "re.match(r'(?P<y>\\d+)-(?P<m>\\d+)', '2024-05').groupdict()",
     {"y": "2024", "m": "05"}),
    ("re-findall-sub", "[re.findall(r'\\d+', 'a1b22c333'), re.sub(r'\\s+', ' ', 'a  b\\tc')]",
     [["1", "22", "333"], "a b c"]),
    ("datetime-arithmetic", "(datetime.datetime(2024, 1, 1) + datetime.timedelta(days=3))"
     ".isoformat()", "2024-01-04T00:00:00"),
    ("datetime-timezone", "datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)"
     ".isoformat()", "2024-01-01T00:00:00+00:00"),
    ("datetime-parse", "datetime.date.fromisoformat('2024-02-29').weekday()", 3),
    ("statistics", "[statistics.mean([1, 2, 3]), statistics.median([3, 1, 2])]", [2, 2]),
    ("itertools", "[list(p) for p in itertools.permutations([1, 2])]", [[1, 2], [2, 1]]),
    ("itertools-groupby", "[[k, len(list(g))] for k, g in itertools.groupby('aabccc')]",
     [["a", 2], ["b", 1], ["c", 3]]),
    ("functools", "functools.reduce(lambda a, b: a * b, range(1, 6))", 120),
    ("collections-counter", "collections.Counter('a b a c a'.split()).most_common(1)",
     [["a", 3]]),
    ("collections-defaultdict-append", "group(['ab', 'ac', 'bd'])", {"a": ["ab", "ac"],
                                                                      "b": ["bd"]}),
    ("string", "[string.ascii_lowercase[:3], string.capwords('hi there')]",
     ["abc", "Hi There"]),
    ("f-string-specs", "f'{3.14159:.2f}|{42:>5}|{\"s\"!r}|{1234567:,}'",
     "3.14|   42|'s'|1,234,567"),
    ("percent-format", "'%s-%05.1f-%d%%' % ('a', 3.14159, 50)", "a-003.1-50%"),
    ("format-builtin", "format(0.5, '.0%')", "50%"),
    ("comprehensions", "{k: [v * i for i in range(3) if i] for k, v in {'a': 1, 'b': 2}.items()}",
     {"a": [1, 2], "b": [2, 4]}),
    ("sets", "sorted({1, 2} | {3} - {2})", [1, 2, 3]),
    ("slices-and-strings", "'-'.join(w.upper() for w in 'hello big world'.split()[::-1])",
     "WORLD-BIG-HELLO"),
    ("enumerate-zip", "[[i, a, b] for i, (a, b) in enumerate(zip('ab', 'cd'))]",
     [[0, "a", "c"], [1, "b", "d"]]),
    ("sorting", "sorted([{'n': 2}, {'n': 1}], key=lambda r: r['n'], reverse=True)",
     [{"n": 2}, {"n": 1}]),
    ("walrus", "[y for x in range(5) if (y := x * x) > 4]", [9, 16]),
    ("closures", "make_adder(2)(3)", 5),
    ("star-args", "collect(1, *[2], x=1, **{'y': 2})", [[1, 2], {"x": 1, "y": 2}]),
    ("builtins", "[abs(-1), divmod(7, 2), min(3, 1), sum([1, 2]), any([0, 1]), chr(65), "
     "ord('A'), hex(255), bin(2), round(2.675, 2), len('abc'), list(reversed([1, 2]))]",
     [1, [3, 1], 1, 3, True, "A", 65, "0xff", "0b10", 2.67, 3, [2, 1]]),
    ("unicode", "'héllo wörld'.encode('utf-8').decode('utf-8').title()", "Héllo Wörld"),
    ("underscore-loop-variable", "count_with_underscore(4)", 4),
]

LIBRARY_PLAN = '''
import collections
import datetime
import functools
import itertools
import json
import math
import re
import statistics
import string


def group(words):
    out = collections.defaultdict(list)
    for w in words:
        out[w[0]].append(w)
    return dict(out)


def make_adder(n):
    def add(x):
        return x + n
    return add


def collect(*args, **kwargs):
    return [list(args), kwargs]


def count_with_underscore(n):
    total = 0
    for _ in range(n):
        total = total + 1
    return total


async def run(event, step):
    return {expression}
'''


@pytest.mark.parametrize(("expression", "expected"), [(e, x) for _, e, x in LIBRARIES],
                         ids=[n for n, _, _ in LIBRARIES])
async def test_library_usage(
    engine: af.Engine, clock: af.FakeClock, expression: str, expected: Any
) -> None:
    details = await finish(engine, clock, LIBRARY_PLAN.replace("{expression}", expression))
    assert details.status == "complete", details.error
    assert details.output == expected


# -- ordinary plans that early versions of the sandbox got wrong (usability, not security) --
FORMER_GAPS: list[tuple[str, str, Any, str]] = [
    ("strftime", "datetime.datetime(2024, 1, 2).strftime('%Y-%m-%d')", "2024-01-02",
     "C datetime imports 'time' through the plan's __import__, which refuses it"),
    ("date-format-spec", "f'{datetime.date(2024, 1, 2):%d/%m/%Y}'", "02/01/2024",
     "format(date, spec) calls strftime, which imports 'time' through the plan's importer"),
    ("strptime", "datetime.datetime.strptime('2024-01-02', '%Y-%m-%d').day", 2,
     "datetime.strptime imports '_strptime' through the plan's importer"),
    ("counter-item-assignment", "set_item(collections.Counter(), 'a', 2)", {"a": 2},
     "the write guard lets only dict and list take item assignment"),
    ("ordered-dict-item-assignment", "set_item(collections.OrderedDict(), 'a', 1)", {"a": 1},
     "the write guard lets only dict and list take item assignment"),
    ("defaultdict-item-assignment", "set_item(collections.defaultdict(int), 'a', 1)",
     {"a": 1}, "the write guard lets only dict and list take item assignment"),
    ("missing-attribute-raises", "missing_attribute()", "AttributeError",
     "_getattr_ is called without a default, so guarded_getattr's default=None turns every "
     "missing attribute into None instead of AttributeError"),
    ("uuid-from-int-is-deterministic", "str(uuid.UUID(int=1))",
     "00000000-0000-0000-0000-000000000001",
     "the nondeterminism rule flags every uuid.* call, even uuid.UUID(int=...)"),
]

GAP_PLAN = '''
import collections
import datetime
import uuid


def set_item(mapping, key, value):
    mapping[key] = value
    return dict(mapping)


def missing_attribute():
    try:
        return {"a": 1}.no_such_method
    except AttributeError:
        return "AttributeError"


async def run(event, step):
    return {expression}
'''


@pytest.mark.parametrize(
    ("expression", "expected"),
    [(e, x) for _, e, x, _ in FORMER_GAPS],
    ids=[n for n, _, _, _ in FORMER_GAPS],
)
async def test_former_gaps(
    engine: af.Engine, clock: af.FakeClock, expression: str, expected: Any
) -> None:
    details = await finish(engine, clock, GAP_PLAN.replace("{expression}", expression))
    assert details.status == "complete", details.error
    assert details.output == expected


def test_augmented_item_assignment_is_accepted() -> None:
    source = plan('''
        async def run(event, step):
            counts = {"a": 0}
            counts["a"] += 1
            return counts
    ''')
    assert sandbox.validate(source).ok


async def test_print_limit_counts_bytes(engine: af.Engine, clock: af.FakeClock) -> None:
    printed: list[str] = []
    source = plan('''
        async def run(event, step):
            print("é" * 100000)
            return 1
    ''')
    await finish(engine, clock, source, printed=printed)
    assert len("".join(printed).encode()) <= 64 * 1024 + 100
