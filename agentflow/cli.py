"""The ``agentflow`` command: inspect instances from any process sharing the database."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from . import _cli_approvals
from ._worker_app import run_worker
from .engine import Engine
from .errors import AgentflowError
from .records import InstanceDetails, InstanceEvent

DEFAULT_DB = "sqlite:///agentflow.db"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow", description=__doc__)
    parser.add_argument(
        "--db", default=os.environ.get("AGENTFLOW_DB", DEFAULT_DB),
        help="database URL (default: $AGENTFLOW_DB or %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list instances, newest first")
    listing.add_argument("--workflow")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    status = commands.add_parser("status", help="show one instance")
    status.add_argument("id")
    status.add_argument("--workflow")
    events = commands.add_parser("events", help="show an instance's history")
    events.add_argument("id")
    events.add_argument("--workflow")
    events.add_argument("--follow", "-f", action="store_true", help="follow until it finishes")
    export = commands.add_parser(
        "export", help="write an instance's whole history as JSON (for replay tests)")
    export.add_argument("id", help="the instance id (the tenant's id with --tenant)")
    export.add_argument("--workflow")
    export.add_argument("--tenant")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    _cli_approvals.add_commands(commands)
    worker = commands.add_parser(
        "worker", help="run a standalone worker until SIGTERM/SIGINT",
        description="Run the workflows of APP against the database. APP is 'module:attribute':"
        " a function taking the engine that registers workflows (it may be async), or a dict "
        "mapping workflow names to workflow code.",
    )
    worker.add_argument("app", help="module:attribute (the current directory is importable)")
    worker.add_argument("--concurrency", type=int, default=100,
                        help="per-workflow limit when APP is a dict (default %(default)s)")
    worker.add_argument("--poll-interval", type=float, default=0.5)
    worker.add_argument("--lease-seconds", type=float, default=30.0)
    return parser


def _details_dict(d: InstanceDetails) -> dict[str, object]:
    return {
        "id": d.id, "workflow": d.workflow_name, "status": str(d.status), "output": d.output,
        "error": None if d.error is None else {"name": d.error.name, "message": d.error.message},
        "created_at": d.created_at.isoformat() if d.created_at else None,
        "updated_at": d.updated_at.isoformat() if d.updated_at else None,
    }


def _event_line(e: InstanceEvent, as_json: bool) -> str:
    if as_json:
        return json.dumps({
            "seq": e.seq, "type": e.type, "timestamp": e.timestamp.isoformat(),
            "step": e.step, "data": e.data,
        })
    step = f" {e.step!r}" if e.step else ""
    data = f" {json.dumps(e.data)}" if e.data else ""
    return f"{e.timestamp.isoformat(timespec='milliseconds')} {e.type}{step}{data}"


async def _run(args: argparse.Namespace) -> int:
    if args.command == "worker":
        return await run_worker(
            args.db, args.app, concurrency=args.concurrency,
            poll_interval=args.poll_interval, lease_seconds=args.lease_seconds,
        )
    async with Engine.open(args.db, worker=False) as engine:
        if args.command in ("approvals", "approve", "reject"):
            return await _cli_approvals.run(engine, args)
        if args.command == "export":
            return await _export(engine, args)
        if args.command == "list":
            for d in await engine.list_instances(
                workflow=args.workflow, status=args.status, limit=args.limit
            ):
                if args.json:
                    print(json.dumps(_details_dict(d)))
                else:
                    print(f"{d.id}\t{d.workflow_name}\t{d.status}")
            return 0
        instance = await engine.get(args.id, workflow=args.workflow)
        if args.command == "status":
            shown = _details_dict(await instance.status())
            print(json.dumps(shown, indent=None if args.json else 2))
            return 0
        async for event in instance.events(follow=args.follow):
            print(_event_line(event, args.json), flush=True)
        return 0


async def _export(engine: Engine, args: argparse.Namespace) -> int:
    from .testing.history import export_run

    instance_id = f"{args.tenant}.{args.id}" if args.tenant else args.id
    run = await export_run(await engine.get(instance_id, workflow=args.workflow))
    if args.output:
        run.save(args.output)
        print(f"wrote {args.output}: {len(run.steps)} steps, status {run.status}")
    else:
        print(json.dumps(run.to_dict(), indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except AgentflowError as exc:
        print(f"agentflow: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
