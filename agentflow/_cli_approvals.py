"""``agentflow approvals | approve | reject``: the approval inbox from a terminal, against the
same database as the running agents (any process)."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
from typing import Any

from .approvals import KEEP, ApprovalRequest
from .engine import Engine
from .errors import InvalidArgumentError


def add_commands(commands: Any) -> None:
    listing = commands.add_parser("approvals", help="list open approval gates, oldest first")
    listing.add_argument("--workflow")
    listing.add_argument("--tenant")
    listing.add_argument("--older-than", help="only requests at least this old, e.g. '1 hour'")
    listing.add_argument("--limit", type=int, default=100)
    for verb in ("approve", "reject"):
        command = commands.add_parser(verb, help=f"{verb} an instance's open gate")
        command.add_argument("id", help="the instance id (the tenant's id with --tenant)")
        command.add_argument("gate", nargs="?", help="the gate's name (default: the only one)")
        command.add_argument("--comment")
        command.add_argument("--by", default=None, help="who decides (default: your user name)")
        command.add_argument("--version", help="the code version you reviewed (as listed); "
                             "refused if the gate was requested by another")
        command.add_argument("--workflow")
        command.add_argument("--tenant", help="decide as this tenant: only its gates")
        if verb == "approve":
            command.add_argument("--data", help="edited arguments, as JSON")


def _request_dict(r: ApprovalRequest) -> dict[str, Any]:
    return {
        "instance_id": r.instance_id, "workflow": r.workflow_name, "tenant": r.tenant_id,
        "gate": r.gate, "count": r.count, "prompt": r.prompt, "data": r.data,
        "version": r.version, "requested_at": r.requested_at.isoformat(),
        "expires_at": r.expires_at.isoformat() if r.expires_at else None,
    }


async def run(engine: Engine, args: argparse.Namespace) -> int:
    if args.command == "approvals":
        found = await engine.approvals(workflow=args.workflow, tenant=args.tenant,
                                       older_than=args.older_than, limit=args.limit)
        for r in found:
            if args.tenant:  # ids as the tenant knows them, as approve --tenant takes them
                r = dataclasses.replace(r, instance_id=r.instance_id.removeprefix(
                    f"{args.tenant}."))
            if args.json:
                print(json.dumps(_request_dict(r)))
            else:
                version = (r.version or "-")[:12]
                print(f"{r.instance_id}\t{r.workflow_name}\t{r.gate}\t"
                      f"{_age(r.age_seconds)}\t{version}\t{r.prompt}")
        if not found and not args.json:
            print("no open approvals")
        return 0
    instance_id = f"{args.tenant}.{args.id}" if args.tenant else args.id
    instance = await engine.get(instance_id, workflow=args.workflow)
    version = args.version if args.version is not None else KEEP
    by = args.by or getpass.getuser()
    if args.command == "approve":
        data = KEEP
        if args.data is not None:
            try:
                data = json.loads(args.data)
            except ValueError as exc:
                raise InvalidArgumentError(f"--data must be JSON: {exc}") from None
        await instance.approve(args.gate, by=by, comment=args.comment, data=data,
                               version=version)
    else:
        await instance.reject(args.gate, by=by, comment=args.comment, version=version)
    verdict = "approved" if args.command == "approve" else "rejected"
    print(f"{verdict} {args.gate or 'the open gate'} of {args.id} (by {by})")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
