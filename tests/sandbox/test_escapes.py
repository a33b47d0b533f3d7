"""Escape attempts: every plan here is hostile. Each must be rejected by ``validate`` or, if it
is accepted, run in this process through the real engine without getting out: the instance
errors or returns plain data, the canary file in the test directory is neither read nor written,
no file appears, and nothing in this process changes (environment, builtins, namespaces).

A plan that reaches something it must not returns (or prints) the marker ``ESCAPED``.
"""

from __future__ import annotations

import ast
import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import agentflow as af
import sandbox
from sandbox._policy import PlanPolicy
from sandbox._runtime import plan_globals
from tests.conftest import drive
from tests.sandbox._harness import MARKER, Outcome, Snapshot, ToolBox, plan, run_plan


@dataclass(frozen=True)
class Attack:
    id: str
    source: str


def attack(id: str, source: str) -> Attack:
    return Attack(id, plan(source))


BUILTINS = [
    attack("builtins-dict", """
        async def run(event, step):
            return __builtins__["open"](event.payload["canary"]).read()
    """),
    attack("dunder-import", """
        async def run(event, step):
            os = __import__("os")
            return "ESCAPED " + os.getcwd()
    """),
    attack("open-read", """
        async def run(event, step):
            return await step.do("read", lambda: open(event.payload["canary"]).read())
    """),
    attack("open-write", """
        async def run(event, step):
            return await step.do("w", lambda: open(event.payload["canary"], "w").write("x"))
    """),
    attack("eval", """
        async def run(event, step):
            return eval("__import__('os').getcwd()")
    """),
    attack("exec", """
        async def run(event, step):
            exec("import os")
            return "ESCAPED"
    """),
    attack("compile", """
        async def run(event, step):
            return "ESCAPED " + repr(compile("1", "x", "eval"))
    """),
    attack("getattr", """
        async def run(event, step):
            return "ESCAPED " + repr(getattr(step, "_run"))
    """),
    attack("vars", """
        async def run(event, step):
            return "ESCAPED " + repr(vars(event))
    """),
    attack("globals", """
        async def run(event, step):
            return "ESCAPED " + repr(sorted(globals()))
    """),
    attack("locals", """
        async def run(event, step):
            return "ESCAPED " + repr(locals())
    """),
    attack("type", """
        async def run(event, step):
            return "ESCAPED " + repr(type(step))
    """),
    attack("object-subclasses", """
        async def run(event, step):
            return "ESCAPED " + repr(object.__subclasses__())
    """),
    attack("super", """
        async def run(event, step):
            return "ESCAPED " + repr(super())
    """),
    attack("dir", """
        async def run(event, step):
            return "ESCAPED " + repr(dir(step))
    """),
    attack("setattr", """
        async def run(event, step):
            setattr(event, "payload", 1)
            return "ESCAPED"
    """),
    attack("breakpoint-input-help", """
        async def run(event, step):
            breakpoint()
            input()
            help()
            return "ESCAPED"
    """),
    attack("builtin-self", """
        async def run(event, step):
            return "ESCAPED " + repr(len.__self__)
    """),
    attack("import-builtins", """
        import builtins
        async def run(event, step):
            return "ESCAPED " + repr(builtins.open)
    """),
    attack("exit", """
        async def run(event, step):
            exit(1)
            quit()
            return "ESCAPED"
    """),
]

DUNDERS_AND_FRAMES = [
    attack("str-mro-subclasses", """
        async def run(event, step):
            return "ESCAPED " + repr("".__class__.__mro__[1].__subclasses__())
    """),
    attack("function-globals", """
        def helper():
            return 1
        async def run(event, step):
            return "ESCAPED " + repr(helper.__globals__["__builtins__"])
    """),
    attack("function-code", """
        async def run(event, step):
            return "ESCAPED " + repr(run.__code__.co_consts)
    """),
    attack("own-coroutine-frame", """
        async def helper():
            return 1
        async def run(event, step):
            c = helper()
            frame = c.cr_frame
            c.close()
            return "ESCAPED " + repr(frame.f_back)
    """),
    attack("step-coroutine-frame", """
        async def run(event, step):
            c = step.do("a", lambda: 1)
            return "ESCAPED " + repr(c.cr_frame.f_globals)
    """),
    attack("step-coroutine-await", """
        async def run(event, step):
            c = step.do("a", lambda: 1)
            return "ESCAPED " + repr(c.cr_await)
    """),
    attack("genexp-frame", """
        async def run(event, step):
            g = (x for x in [1])
            return "ESCAPED " + repr(g.gi_frame.f_builtins)
    """),
    attack("async-genexp-frame", """
        async def run(event, step):
            g = (await x for x in [])
            return "ESCAPED " + repr(g.ag_frame)
    """),
    attack("traceback-frame", """
        async def run(event, step):
            try:
                1 / 0
            except Exception as e:
                return "ESCAPED " + repr(e.__traceback__.tb_frame.f_globals)
    """),
    # Fullwidth letters: the parser folds them (NFKC) into "mro" and "format".
    attack("nfkc-normalised-attributes", """
        async def run(event, step):
            found = repr(str.\uff4d\uff52\uff4f())
            return "ESCAPED " + found + "{0}".\uff46\uff4f\uff52\uff4d\uff41\uff54(step)
    """),
    attack("namespace-dict", """
        import json
        async def run(event, step):
            return "ESCAPED " + repr(json.__dict__)
    """),
    attack("tool-closure", """
        async def run(event, step):
            return await step.do("c", lambda: "ESCAPED " + repr(tools.fetch.__closure__))
    """),
    attack("bound-method-self", """
        import random
        async def run(event, step):
            return "ESCAPED " + repr(random.random.__self__)
    """),
    attack("reduce-ex", """
        async def run(event, step):
            return "ESCAPED " + repr(event.__reduce_ex__(2))
    """),
    attack("getattribute", """
        async def run(event, step):
            return "ESCAPED " + repr(step.__getattribute__("_run"))
    """),
    attack("code-attribute-names", """
        async def run(event, step):
            c = step.do("a", lambda: 1)
            g = (x for x in [1])
            found = [c.cr_code, c.cr_origin, g.gi_code, g.gi_yieldfrom]
            return "ESCAPED " + repr(found)
    """),
]

FORMAT_STRINGS = [
    attack("str-format-dunder", """
        async def run(event, step):
            return "{0.__class__.__mro__}".format(step)
    """),
    attack("format-map", """
        async def run(event, step):
            return "{s._run}".format_map({"s": step})
    """),
    attack("f-string-dunder", """
        async def run(event, step):
            return f"{step.__class__}"
    """),
    attack("string-formatter", """
        import string
        async def run(event, step):
            f = string.Formatter()
            return "ESCAPED " + f.vformat("{0._run}", [step], {})
    """),
    attack("str-format-unbound", """
        async def run(event, step):
            return str.format("{0._run.storage}", step)
    """),
    attack("format-builtin-with-fields", """
        async def run(event, step):
            return format(step, "{0._run}")
    """),
    attack("format-builtin-datetime", """
        import datetime
        async def run(event, step):
            return format(datetime.datetime(2020, 1, 1), "{0.__class__}%Y")
    """),
    attack("percent-format", """
        async def run(event, step):
            return "%s %r" % (step, event)
    """),
    attack("percent-mapping", """
        async def run(event, step):
            return "%(payload)s" % event
    """),
    attack("f-string-nested-spec", """
        async def run(event, step):
            return f"{event!r:>{40}} {step!s:.{10}}"
    """),
    attack("format-bound-method", """
        import random
        async def run(event, step):
            leak = "{0.__self__.__class__.__init__.__globals__[_os].environ}".format
            return leak(random.random)
    """),
    attack("match-class-pattern", """
        async def run(event, step):
            match "x":
                case str(format=f):
                    return f("{0.__class__}", step)
            return None
    """),
]

EXCEPTIONS = [
    attack("with-traceback", """
        async def run(event, step):
            try:
                1 / 0
            except Exception as e:
                return [repr(e.with_traceback(None)), list(e.args)]
    """),
    attack("raise-system-exit", """
        async def run(event, step):
            raise SystemExit(1)
    """),
    attack("raise-keyboard-interrupt", """
        async def run(event, step):
            raise KeyboardInterrupt
    """),
    attack("raise-generator-exit", """
        async def run(event, step):
            raise GeneratorExit
    """),
    attack("except-base-exception-swallows-suspend", """
        async def run(event, step):
            try:
                await step.sleep("nap", 3600)
            except BaseException:
                return "ESCAPED swallowed the engine's suspension"
            return "slept"
    """),
    attack("bare-except-swallows-suspend", """
        async def run(event, step):
            try:
                await step.sleep("nap", 3600)
            except:
                return "ESCAPED swallowed the engine's suspension"
            return "slept"
    """),
    attack("finally-return", """
        async def run(event, step):
            try:
                await step.sleep("nap", 3600)
            finally:
                return "ESCAPED swallowed the engine's suspension"
    """),
    attack("finally-break", """
        async def run(event, step):
            for i in range(1):
                try:
                    await step.sleep("nap", 3600)
                finally:
                    break
            return "ESCAPED swallowed the engine's suspension"
    """),
    attack("except-exception-does-not-swallow-suspend", """
        async def run(event, step):
            try:
                await step.sleep("nap", 3600)
            except Exception:
                return "ESCAPED swallowed the engine's suspension"
            return "slept"
    """),
    attack("except-tuple-with-stop-iteration", """
        async def run(event, step):
            try:
                await step.wait_for_event("w", type="go", timeout="1 hour")
            except (Exception, StopIteration, RuntimeError) as e:
                return "caught " + type_name(e)
            return "ESCAPED no timeout"
        def type_name(e):
            return str(e)[:20]
    """),
    attack("finally-awaits-a-step-during-suspension", """
        async def run(event, step):
            try:
                await step.sleep("nap", 3600)
            finally:
                await step.do("after", lambda: tools.record("finally"))
            return "done"
    """),
    attack("exception-class-bases", """
        async def run(event, step):
            try:
                await step.do("bad", 5)
            except Exception as e:
                return "ESCAPED " + repr(e.__class__.__bases__)
    """),
    attack("engine-error-args", """
        async def run(event, step):
            try:
                await step.do("bad", 5)
            except Exception as e:
                return [repr(a) for a in e.args] + [str(e)]
    """),
    attack("except-star", """
        async def run(event, step):
            try:
                1 / 0
            except* Exception as group:
                return "ESCAPED " + repr(group.exceptions)
    """),
    attack("stop-iteration-in-coroutine", """
        async def run(event, step):
            raise StopIteration("out")
    """),
    attack("throw-into-step-coroutine", """
        async def run(event, step):
            c = step.sleep("nap", 3600)
            try:
                c.throw(ValueError("x"))
            except ValueError:
                pass
            return "thrown"
    """),
    attack("host-exception-carries-a-path", """
        async def run(event, step):
            def body():
                try:
                    return tools.load("missing.txt")
                except Exception as e:
                    where = e.filename
                    if where is None or isinstance(where, str):
                        return "plain"
                    canary = where.parent.parent.joinpath("canary.txt")
                    stolen = canary.read_text()
                    canary.write_text("pwned")
                    return "ESCAPED " + stolen
            return await step.do("load", body)
    """),
]

MODULE_CHAINS = [
    attack("json-decoder-sys", """
        import json
        async def run(event, step):
            chain = [json.decoder, json.decoder.sys if json.decoder is not None else None]
            return "ESCAPED " + repr(chain) if chain != [None, None] else "blocked"
    """),
    attack("re-compiler", """
        import re
        async def run(event, step):
            return "ESCAPED " + repr(re._compiler)
    """),
    attack("re-pattern-class", """
        import re
        async def run(event, step):
            return "ESCAPED " + repr(re.compile("a").__class__)
    """),
    attack("datetime-sys", """
        import datetime
        async def run(event, step):
            found = datetime.sys
            return "blocked" if found is None else "ESCAPED " + repr(found)
    """),
    attack("random-os", """
        import random
        async def run(event, step):
            return "ESCAPED " + repr(random._os.environ)
    """),
    attack("random-unlisted-names", """
        import random
        async def run(event, step):
            found = [random.Random, random.seed, random.getstate, random.SystemRandom]
            return "blocked" if found == [None] * 4 else "ESCAPED " + repr(found)
    """),
    attack("collections-abc", """
        import collections
        async def run(event, step):
            found = collections.abc
            return "blocked" if found is None else "ESCAPED " + repr(found)
    """),
    attack("functools-partial-func", """
        import functools
        async def run(event, step):
            inner = functools.partial(len).func
            return [inner([1, 2]), repr(functools.partial(sorted, reverse=True).keywords)]
    """),
    attack("uuid-os", """
        import uuid
        async def run(event, step):
            found = [uuid.os, uuid.sys, uuid.int_]
            return "blocked" if found == [None] * 3 else "ESCAPED " + repr(found)
    """),
    attack("string-formatter-attribute", """
        import string
        async def run(event, step):
            found = string.Formatter
            return "blocked" if found is None else "ESCAPED " + repr(found)
    """),
    attack("namespace-internals", """
        import json
        async def run(event, step):
            return "ESCAPED " + repr(json._names)
    """),
    attack("namespace-function-globals", """
        import json
        async def run(event, step):
            return "ESCAPED " + repr(json.loads.__globals__)
    """),
    attack("from-json-import-decoder", """
        from json import decoder
        async def run(event, step):
            return "ESCAPED " + repr(decoder)
    """),
    attack("from-collections-import-abc", """
        from collections import abc
        async def run(event, step):
            return "ESCAPED " + repr(abc)
    """),
    attack("from-string-import-formatter", """
        from string import Formatter
        async def run(event, step):
            return "ESCAPED " + repr(Formatter)
    """),
    attack("statistics-unlisted", """
        import statistics
        async def run(event, step):
            found = [statistics.NormalDist, statistics.random, statistics.sys]
            return "blocked" if found == [None] * 3 else "ESCAPED " + repr(found)
    """),
    attack("regex-scanner-and-match-objects", """
        import re
        async def run(event, step):
            m = re.compile("(a)").scanner("aa").match()
            return [m.group(1), m.re.pattern, m.string, m.pos]
    """),
    attack("uuid-enum-members", """
        import uuid
        def body():
            u = uuid.UUID(int=1)
            return [repr(u.is_safe), u.hex, str(u.fields), u.is_safe.name]
        async def run(event, step):
            return await step.do("u", body)
    """),
    attack("class-method-descriptors", """
        import collections
        import datetime
        async def run(event, step):
            found = [collections.Counter.most_common, datetime.datetime.now, uuid_like()]
            return [repr(x)[:20] for x in found]
        def uuid_like():
            return str.upper
    """),
    attack("mutate-namespace-attribute", """
        import json
        async def run(event, step):
            json.loads = len
            return "ESCAPED namespace changed"
    """),
    attack("mutate-math-constant", """
        import math
        async def run(event, step):
            math.pi = 3
            return "ESCAPED namespace changed"
    """),
    attack("mutate-class-attribute", """
        import collections
        async def run(event, step):
            collections.Counter.most_common = len
            return "ESCAPED class changed"
    """),
    attack("mutate-function-attribute", """
        import json
        async def run(event, step):
            json.loads.hijacked = 1
            return "ESCAPED function changed"
    """),
    attack("delete-namespace-attribute", """
        import json
        async def run(event, step):
            del json.loads
            return "ESCAPED namespace changed"
    """),
    attack("mutate-datetime-class", """
        import datetime
        async def run(event, step):
            datetime.datetime.max = 1
            return "ESCAPED class changed"
    """),
    attack("json-hooks-with-classes", """
        import collections
        import json
        async def run(event, step):
            a = json.loads('{"a": 1}', cls=collections.OrderedDict)
            b = json.dumps({"a": 1}, cls=collections.Counter)
            return "ESCAPED " + repr([a, b])
    """),
    attack("class-mro-attribute", """
        import json
        async def run(event, step):
            return "ESCAPED " + repr(json.JSONDecodeError.mro())
    """),
]

ENGINE_OBJECTS = [
    attack("tools-call", """
        async def run(event, step):
            return await step.do("t", lambda: "ESCAPED " + repr(tools._call("fetch")))
    """),
    attack("step-run", """
        async def run(event, step):
            return "ESCAPED " + repr(step._run.storage)
    """),
    attack("step-do-self", """
        async def run(event, step):
            return "ESCAPED " + repr(step.do.__self__._run)
    """),
    attack("event-dict", """
        async def run(event, step):
            return "ESCAPED " + repr(event.__dict__)
    """),
    attack("payload-class", """
        async def run(event, step):
            return "ESCAPED " + repr(event.payload.__class__.__subclasses__())
    """),
    attack("tools-getattr-dunder", """
        async def run(event, step):
            return await step.do("t", lambda: "ESCAPED " + repr(tools.__getattr__("x")))
    """),
    attack("unknown-tool", """
        async def run(event, step):
            return await step.do("t", lambda: tools.shell("rm -rf /"))
    """),
    attack("step-context-config", """
        async def run(event, step):
            return await step.do("c", lambda ctx: [repr(ctx.config), ctx.name, ctx.attempt])
    """),
    attack("live-object-to-tool", """
        async def run(event, step):
            return await step.do("r", lambda: tools.record(step, event, lambda: 1))
    """),
    attack("live-object-to-tool-kwargs", """
        import json
        async def run(event, step):
            return await step.do("r", lambda: tools.record(cb=json.loads))
    """),
    attack("star-args-to-tool", """
        async def run(event, step):
            return await step.do("r", lambda: tools.record(*[step], **{"x": event}))
    """),
    attack("replace-event-payload", """
        async def run(event, step):
            event.payload = {"canary": "x"}
            return "ESCAPED event changed"
    """),
    attack("tool-function-as-body", """
        async def run(event, step):
            return await step.do("t", tools.fetch)
    """),
    attack("tool-object-as-step-result", """
        async def run(event, step):
            return await step.do("t", lambda: tools)
    """),
    attack("step-all-non-awaitables", """
        async def run(event, step):
            return await step.all(1, "x")
    """),
    attack("step-do-retries-as-dict", """
        async def run(event, step):
            return await step.do("x", lambda: 1, retries={"limit": 0, "delay": print})
    """),
    attack("tools-leaked-out-of-a-step-body", """
        async def run(event, step):
            box = []
            await step.do("grab", lambda: box.append(tools) or 1)
            return box[0].fetch(event.payload["url"])
    """),
]

LIVE_RESULTS = [
    attack("return-step", """
        async def run(event, step):
            return step
    """),
    attack("return-tool-function", """
        async def run(event, step):
            return await step.do("t", lambda: tools.fetch)
    """),
    attack("return-lambda", """
        async def run(event, step):
            return lambda: 1
    """),
    attack("return-generator", """
        async def run(event, step):
            return (x for x in range(3))
    """),
    attack("return-event", """
        async def run(event, step):
            return event
    """),
    attack("return-namespace", """
        import json
        async def run(event, step):
            return json
    """),
    attack("return-unawaited-step", """
        async def run(event, step):
            return step.do("x", lambda: 1)
    """),
    attack("return-exception", """
        async def run(event, step):
            return ValueError("x")
    """),
    attack("return-nested-live", """
        async def run(event, step):
            return {"ok": [1, {"step": step}]}
    """),
    attack("return-print", """
        async def run(event, step):
            return print
    """),
    attack("return-nan", """
        async def run(event, step):
            return float("nan")
    """),
]

GUARDS_AND_NAMES = [
    attack("rebind-getattr-guard", """
        _getattr_ = lambda obj, name: "ESCAPED"
        async def run(event, step):
            return step._run
    """),
    attack("rebind-write-guard", """
        async def run(event, step):
            _write_ = lambda obj: obj
            event.payload = 1
            return "ESCAPED"
    """),
    attack("rebind-builtins", """
        __builtins__ = {"open": 1}
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("underscore-argument", """
        def helper(_secret):
            return _secret
        async def run(event, step):
            return helper(1)
    """),
    attack("rebind-print", """
        async def run(event, step):
            print = 1
            return "ESCAPED"
    """),
    attack("rebind-printed", """
        async def run(event, step):
            printed = "x"
            return "ESCAPED " + printed
    """),
    attack("define-guard-function", """
        def _getiter_(x):
            return x
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("guard-as-lambda-default", """
        async def run(event, step):
            f = lambda _getattr_=None: 1
            return "ESCAPED"
    """),
    attack("dunder-name", """
        async def run(event, step):
            return "ESCAPED " + __name__
    """),
    attack("lambda-default-step", """
        async def run(event, step):
            f = lambda s=step: s._run
            return "ESCAPED " + repr(f())
    """),
    attack("lambda-defaults-attribute", """
        async def run(event, step):
            return "ESCAPED " + repr((lambda x=step: 0).__defaults__)
    """),
    attack("module-default-captures-tools", """
        def helper(t=tools):
            return t
        async def run(event, step):
            return helper().fetch("x")
    """),
    attack("rebind-run-after-def", """
        async def run(event, step):
            return 1
        run = len
    """),
    attack("global-statement", """
        async def run(event, step):
            global tools
            tools = None
            return "ESCAPED"
    """),
    attack("nonlocal-statement", """
        async def run(event, step):
            t = None
            def grab():
                nonlocal t
                t = tools
                return 1
            await step.do("grab", grab)
            return t.fetch("x")
    """),
]

IMPORTS = [
    attack("import-os", """
        import os
        async def run(event, step):
            return "ESCAPED " + os.getcwd()
    """),
    attack("import-relative", """
        from . import x
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("import-os-path-as", """
        import os.path as p
        async def run(event, step):
            return "ESCAPED " + p.abspath(".")
    """),
    attack("import-importlib", """
        import importlib
        async def run(event, step):
            return "ESCAPED " + repr(importlib.import_module("os"))
    """),
    attack("import-json-decoder", """
        import json.decoder
        async def run(event, step):
            return "ESCAPED " + repr(json.decoder)
    """),
    attack("import-sys-asyncio", """
        import sys
        import asyncio
        async def run(event, step):
            return "ESCAPED " + repr(sys.modules)
    """),
    attack("import-star", """
        from json import *
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("import-underscore-alias", """
        import re as _re
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("import-underscore-name", """
        from json import _names
        async def run(event, step):
            return "ESCAPED " + repr(_names)
    """),
    attack("import-inside-function", """
        async def run(event, step):
            import os
            return "ESCAPED " + os.getcwd()
    """),
    attack("import-future", """
        from __future__ import annotations
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("import-relative-allowed-name", """
        from .json import loads
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("import-collections-abc", """
        import collections.abc
        async def run(event, step):
            return "ESCAPED " + repr(collections.abc)
    """),
    attack("import-subprocess-via-from", """
        from subprocess import run as sh
        async def run(event, step):
            return "ESCAPED"
    """),
]

PRINT_AND_CALLS = [
    attack("print-to-file", """
        async def run(event, step):
            print("x", file=open(event.payload["canary"], "w"))
            return "ESCAPED"
    """),
    attack("print-file-argument-ignored", """
        async def run(event, step):
            print("to a file?", file=event, flush=True)
            print(step, event, sep=" | ")
            return "printed"
    """),
    attack("print-alias", """
        async def run(event, step):
            p = print
            p("hello")
            return "ok"
    """),
    attack("star-kwargs-dunder-keys", """
        async def run(event, step):
            return dict(**{"__class__": 1, "_run": 2})
    """),
    attack("star-args-step-do", """
        async def run(event, step):
            return await step.do(*["starred", lambda: 1])
    """),
    attack("isinstance-games", """
        async def run(event, step):
            found = [isinstance(step, (int, str)), issubclass(bool, int), callable(step.do)]
            try:
                found.append(isinstance(1, step))
            except TypeError:
                found.append("not a class")
            return found
    """),
    attack("str-mro", """
        async def run(event, step):
            return "ESCAPED " + repr(str.mro())
    """),
    attack("iter-over-step-coroutine", """
        async def run(event, step):
            return "ESCAPED " + repr(list(iter(step.do("x", lambda: 1))))
    """),
    attack("next-default-live", """
        async def run(event, step):
            return next(iter([]), step)
    """),
    attack("iter-callable-sentinel", """
        async def run(event, step):
            seq = iter([1, 2, 3, None])
            return list(iter(lambda: next(seq), None))
    """),
    attack("comprehension-builtins", """
        async def run(event, step):
            return [__builtins__ for x in [1]]
    """),
    attack("comprehension-namespace-dict", """
        import json
        async def run(event, step):
            return [k for k in json.__dict__]
    """),
    attack("walrus-leaks-tools", """
        async def run(event, step):
            found = await step.do("w", lambda: [(t := tools) for i in [1]] and 1)
            return found
    """),
    attack("class-definition", """
        class A:
            pass
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("exception-subclass", """
        class Boom(Exception):
            pass
        async def run(event, step):
            raise Boom("x")
    """),
    attack("module-decorator", """
        def deco(f):
            return f
        @deco
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("nested-decorator", """
        async def run(event, step):
            def deco(f):
                return f
            @deco
            def inner():
                return "decorated"
            return inner()
    """),
    attack("async-for", """
        async def run(event, step):
            async for x in event:
                pass
            return "ESCAPED"
    """),
    attack("async-with", """
        async def run(event, step):
            async with step:
                pass
            return "ESCAPED"
    """),
    attack("with-statement", """
        async def run(event, step):
            with event as e:
                return "ESCAPED " + repr(e)
    """),
    attack("yield", """
        async def run(event, step):
            yield 1
    """),
    attack("yield-from", """
        def gen():
            yield from [1]
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("async-generator", """
        async def agen():
            yield 1
        async def run(event, step):
            return "ESCAPED"
    """),
    attack("async-comprehension", """
        async def run(event, step):
            return [x async for x in event.payload]
    """),
    attack("await-non-awaitable", """
        async def run(event, step):
            return await event
    """),
    attack("main-guard", """
        async def run(event, step):
            return 1
        if __name__ == "__main__":
            pass
    """),
]

# Driving the engine's own coroutines by hand: ``send`` runs a step coroutine up to its first
# suspension and hands the plan whatever it awaits there, an asyncio future whose
# ``get_loop()`` is the event loop of this process.
COROUTINE_DRIVING = [
    attack("step-all-send-loop-subprocess", """
        async def run(event, step):
            c = step.all(step.do("a", lambda: 1))
            future = c.send(None)
            loop = future.get_loop()
            canary = event.payload["canary"]
            cmd = "cat " + canary + " > " + canary + ".stolen; echo pwned > " + canary
            spawn = loop.subprocess_exec(
                lambda: 1, "sh", "-c", cmd, stdin=None, stdout=None, stderr=None
            )
            spawn.send(None)
            pause = loop.create_future()
            loop.call_later(0.3, pause.set_result, 1)
            await pause
            return "ESCAPED " + repr(loop)
    """),
    attack("step-do-send-future", """
        async def run(event, step):
            future = step.do("a", lambda: 1).send(None)
            return "ESCAPED " + repr(future.get_loop())
    """),
    attack("async-tool-send-future", """
        def body():
            future = tools.afetch("x").send(None)
            return "ESCAPED " + repr(future.get_loop())
        async def run(event, step):
            return await step.do("peek", body)
    """),
    attack("own-helper-send-future", """
        async def helper(step):
            return await step.do("a", lambda: 1)
        async def run(event, step):
            future = helper(step).send(None)
            return "ESCAPED " + repr(future.get_loop())
    """),
    attack("async-genexp-asend-future", """
        async def run(event, step):
            pending = (await c for c in [step.do("a", lambda: 1)])
            future = pending.asend(None).send(None)
            return "ESCAPED " + repr(future.get_loop())
    """),
    attack("suspended-coroutine-throw-future", """
        async def run(event, step):
            c = step.all(step.do("a", lambda: 1), step.do("b", lambda: 2))
            c.send(None)
            try:
                future = c.throw(ValueError("resume"))
            except ValueError:
                return "no future"
            return "ESCAPED " + repr(future)
    """),
    attack("loop-exception-handler-sees-other-tenants", """
        async def run(event, step):
            future = step.do("a", lambda: 1).send(None)
            loop = future.get_loop()
            loop.set_exception_handler(lambda loop, context: tools_of(context))
            return "ESCAPED " + repr(loop.get_exception_handler())
        def tools_of(context):
            return None
    """),
]

ATTACKS = [
    *BUILTINS, *DUNDERS_AND_FRAMES, *FORMAT_STRINGS, *EXCEPTIONS, *MODULE_CHAINS,
    *ENGINE_OBJECTS, *LIVE_RESULTS, *GUARDS_AND_NAMES, *IMPORTS, *PRINT_AND_CALLS,
    *COROUTINE_DRIVING,
]


def test_attack_ids_are_unique() -> None:
    ids = [a.id for a in ATTACKS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


def assert_contained(outcome: Outcome, box: ToolBox) -> None:
    for line in outcome.printed:
        assert MARKER not in line, f"printed: {line}"
    for item in box.received:  # tools only ever receive plain data
        assert json.loads(json.dumps(item)) == item
    if outcome.stage != "ran":
        return
    details = outcome.details
    assert details is not None
    assert details.status in ("errored", "complete", "waiting"), details
    if details.status == "complete":
        text = json.dumps(details.output)  # plain data, or the engine would have refused it
        assert MARKER not in text, f"escaped: {details.output!r}"


@pytest.mark.parametrize("case", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_attack_is_contained(case: Attack, tmp_path: Path) -> None:
    snapshot = Snapshot.take(tmp_path)
    box = ToolBox(tmp_path / "docs")
    outcome = await run_plan(case.source, tmp_path, tools=box)
    snapshot.assert_untouched()
    assert_contained(outcome, box)


# Defense in depth: the plan rules (``forbidden-name``, ``import-not-allowed``) are the first
# line only; the restricted runtime must hold on its own when a plan reaches it anyway.
RULE_ONLY = {"forbidden-name", "import-not-allowed"}


def _rejected_by_rules_only(case: Attack) -> bool:
    report = sandbox.validate(case.source)
    codes = {d.code for d in report.errors}
    return bool(codes) and codes <= RULE_ONLY


BYPASS = [a for a in ATTACKS if _rejected_by_rules_only(a)]


@pytest.mark.parametrize("case", BYPASS, ids=[a.id for a in BYPASS])
async def test_runtime_holds_without_the_plan_rules(case: Attack, tmp_path: Path) -> None:
    snapshot = Snapshot.take(tmp_path)
    box = ToolBox(tmp_path / "docs")
    tree = PlanPolicy().visit(ast.parse(case.source))
    ast.fix_missing_locations(tree)
    code = compile(tree, "<plan>", "exec")
    printed: list[str] = []
    namespace = plan_globals(tools=box.granted(), allowed_imports=sandbox.DEFAULT_IMPORTS,
                             print_sink=printed.append)
    try:
        exec(code, namespace)
    except Exception:  # module-level imports fail here
        snapshot.assert_untouched()
        return
    run = namespace["run"]
    outcome = await _run_unvalidated(run, tmp_path, printed)
    snapshot.assert_untouched()
    assert_contained(outcome, box)


async def _run_unvalidated(run: object, root: Path, printed: list[str]) -> Outcome:
    (root / "engine").mkdir(exist_ok=True)
    clock = af.FakeClock()
    report = sandbox.validate("async def run(event, step):\n    return 1\n")
    async with af.Engine.open(
        f"sqlite:///{root / 'engine' / 'db'}", clock=clock, poll_interval=0.02
    ) as engine:
        instance = await engine.register("p", run).create(params={
            "canary": str(root / "canary.txt"), "dir": str(root),
        })
        details = await drive(engine, clock, instance, timeout=5)
    gc.collect()
    return Outcome("ran", report, details, printed)


# -- validate never raises, and answers quickly, whatever it is given ----------------------
class WeirdStr(str):
    pass


RUN = "async def run(event, step):\n    return 1\n"
JUNK: list[tuple[str, object]] = [
    ("bytes", b"async def run(event, step):\n    return 1\n"),
    ("none", None),
    ("int", 42),
    ("list", [RUN]),
    ("object", object()),
    ("empty", ""),
    ("whitespace", " \n\t\n"),
    ("ten-megabytes", "x = 1\n" * (10 * 1024 * 1024 // 6)),
    ("open-parens", "(" * 100_000),
    ("nested-brackets", "X = " + "[" * 5000 + "]" * 5000 + "\n" + RUN),
    ("nul-bytes", RUN + "\x00\x00"),
    ("nul-in-string", "async def run(event, step):\n    return '\x00'\n"),
    ("lone-surrogate-string", "async def run(event, step):\n    return '\ud800'\n"),
    ("lone-surrogate-identifier", "async def run(event, step):\n    \udcff = 1\n"),
    ("plus-chain", "async def run(event, step):\n    return " + "+".join(["1"] * 5000) + "\n"),
    ("unary-chain", "async def run(event, step):\n    return " + "-" * 100_000 + "1\n"),
    ("not-chain", "async def run(event, step):\n    return " + "not " * 20_000 + "1\n"),
    ("attribute-chain", "async def run(event, step):\n    return event" + ".a" * 50_000 + "\n"),
    ("call-chain", "async def run(event, step):\n    return len" + "()" * 50_000 + "\n"),
    ("lambda-chain", "X = " + "lambda: " * 3000 + "1\n" + RUN),
    ("deep-blocks", "".join(" " * i + "if 1:\n" for i in range(120)) + " " * 120 + "pass\n"),
    ("deep-fstrings", "X = " + "f'{" * 30 + "1" + "}'" * 30 + "\n" + RUN),
    ("huge-int-literal", "X = 1" + "0" * 100_000 + "\n" + RUN),
    ("wide-tuple", "X = (" + "1," * 100_000 + ")\n" + RUN),
    ("many-statements", "x = 1\n" * 30_000 + RUN),
    ("bom", "\ufeff" + RUN),
    ("crlf", RUN.replace("\n", "\r\n")),
    ("cr-only", RUN.replace("\n", "\r")),
    ("tabs-and-spaces", "async def run(event, step):\n    if 1:\n\tpass\n        return 1\n"),
    ("coding-cookie", "# -*- coding: latin-1 -*-\n" + RUN),
    ("form-feed", "\x0c" + RUN),
    ("backslash-continuations", "X = 1 \\\n" * 5000 + "\n" + RUN),
    ("invalid-utf8-escape", "async def run(event, step):\n    return b'\\xff'.decode()\n"),
    ("only-comment", "# nothing here\n"),
    ("str-subclass", WeirdStr(RUN)),
    ("many-decorators", "@d\n" * 5000 + RUN),
    ("match-statement", "async def run(event, step):\n    match event:\n"
                        "        case {'a': x}:\n            return x\n"),
    ("type-params-syntax", "def f[T](x: T) -> T:\n    return x\n" + RUN),
]


@pytest.mark.parametrize("source", [s for _, s in JUNK], ids=[n for n, _ in JUNK])
def test_validate_never_raises_on_junk(source: object) -> None:
    started = time.perf_counter()
    report = sandbox.validate(source)  # must not raise
    elapsed = time.perf_counter() - started
    assert isinstance(report, sandbox.Report)
    assert elapsed < 3, f"validate took {elapsed:.1f}s"
    for d in report.diagnostics:
        assert d.code and d.message and d.hint and d.line >= 0
    str(report)  # renders, even with odd characters in it
    if not report.ok:
        with pytest.raises(sandbox.PlanRejected):
            sandbox.compile_plan(source)  # type: ignore[arg-type]


def test_validate_with_odd_tool_lists_never_raises() -> None:
    for tools in ([], ["fetch", "fetch"], ["", "x y"], iter(["fetch"])):
        report = sandbox.validate(
            "async def run(event, step):\n    return await step.do('a', lambda: tools.fetch())\n",
            tools=tools,
        )
        assert isinstance(report, sandbox.Report)
