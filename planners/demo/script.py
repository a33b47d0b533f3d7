"""What the demo's model answered, recorded in ``cassette.yaml``: a first draft the validator
rejects, then the plan that runs. ``tests/planners/record_cassettes.py`` serves these replies
from the loopback OpenAI-compatible server and records the exchanges."""

GOAL = (
    "Release version {version} of the sample repository: check it out, install it, run the "
    "linter and the unit tests in parallel, ask a person to approve the deploy, then deploy."
)

FIRST_DRAFT = '''\
Here is the plan.

```python
import subprocess

async def run(event, step):
    version = event.payload["version"]
    checkout = await step.do("check out", lambda: tools.checkout(version))
    subprocess.run(["python", "-m", "unittest"], cwd=checkout["path"])
    deployed = await step.do("deploy", lambda: tools.deploy(checkout["path"], version))
    return deployed
```
'''

PLAN = '''\
```python
async def run(event, step):
    version = event.payload["version"]
    checkout = await step.do("check out", lambda: tools.checkout(version))
    path = checkout["path"]
    installed = await step.do(
        "install", lambda: tools.install(path),
        retries={"limit": 3, "delay": "1 second", "backoff": "constant"},
    )
    lint, tests = await step.all(
        step.do("lint", lambda: tools.lint(path)),
        step.do("unit tests", lambda: tools.run_tests(path)),
    )
    if not lint["ok"] or not tests["ok"]:
        return {"status": "checks failed", "lint": lint["problems"], "tests": tests["output"]}
    decision = await step.wait_for_approval(
        "approve deploy",
        prompt="Deploy version " + version + " of the sample repository?",
        data={"tool": "deploy", "args": {"path": path, "version": version},
              "tests_ran": tests["ran"], "lint_problems": len(lint["problems"])},
        timeout="1 hour",
    )
    if not decision.approved:
        return {"status": "rejected", "by": decision.by, "reason": decision.reason}
    deployed = await step.do("deploy", lambda: tools.deploy(path, version))
    return {
        "status": "released",
        "version": version,
        "modules": installed["modules"],
        "tests_ran": tests["ran"],
        "approved_by": decision.by,
        "target": deployed["target"],
        "digest": deployed["digest"],
    }
```
'''

REPLIES = [FIRST_DRAFT, PLAN]
