"""`docrelay suspend`, `docrelay pause` and `docrelay resume INTEGRATION`: stop and restart
an integration's runs. While stopped, events still create runs, which wait in Queued.

- suspend sets `spec.suspend: true`, the user's own switch (in Git if Git holds the manifest:
  Argo CD would set it back, so change it there).
- pause sets the `Paused` condition, as the operator does after consecutive failed runs; it
  leaves the spec alone, so GitOps stays quiet.
- resume undoes both: clears `Paused` (the failure count starts again) and sets `spec.suspend`
  back to false if it was true.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from docrelay.cli.common import CliError, connect, get_integration
from docrelay.kube import Kube
from docrelay.kube import runs as kube_runs
from docrelay.models.conditions import ConditionStatus, find_condition
from docrelay.models.integration import IntegrationStatus
from docrelay.reconcile.run import PAUSED, paused_by_user, resumed

GITOPS_NOTE = (
    "note: spec.suspend is part of the manifest; if Git (Argo CD) manages this integration, "
    "change it there too or the next sync sets it back"
)


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    suspend = commands.add_parser(
        "suspend",
        parents=parents,
        help="stop starting runs (spec.suspend: true); events still create runs, which wait",
        description=(
            "Set spec.suspend to true: no run starts; events still create runs, which wait in "
            "Queued until `docrelay resume`. Running runs finish; test runs still run."
        ),
    )
    pause = commands.add_parser(
        "pause",
        parents=parents,
        help="pause an integration (the Paused condition) without touching its spec",
        description=(
            "Set the Paused condition, as the operator does after consecutive failed runs: no "
            "run starts, events still create runs, which wait in Queued until `docrelay "
            "resume`. The spec is not changed (GitOps stays quiet)."
        ),
    )
    resume = commands.add_parser(
        "resume",
        parents=parents,
        help="resume a paused or suspended integration",
        description=(
            "Clear the Paused condition (set after consecutive failures or by `docrelay "
            "pause`; the failure count starts again) and set spec.suspend back to false if it "
            "was true. The runs that waited in Queued start."
        ),
    )
    for parser, run in ((suspend, run_suspend), (pause, run_pause), (resume, run_resume)):
        parser.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
        parser.set_defaults(run=run)


def run_suspend(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    obj = get_integration(kube, namespace, args.integration)
    if (obj.get("spec") or {}).get("suspend"):
        print(f"integration {args.integration} is already suspended")
        return 0
    kube_runs.patch_integration_spec(kube, namespace, args.integration, {"suspend": True})
    print(
        f"integration {args.integration} suspended: runs wait in Queued until "
        f"`docrelay resume {args.integration}`"
    )
    print(GITOPS_NOTE)
    return 0


def run_pause(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    who = kube.whoami()

    def change(status: IntegrationStatus, generation: int | None) -> IntegrationStatus | None:
        if _paused(status):
            return None
        return paused_by_user(status, _now(), generation, who)

    if _write(kube, namespace, args.integration, change, ["conditions"]):
        print(
            f"integration {args.integration} paused: runs wait in Queued until "
            f"`docrelay resume {args.integration}`"
        )
    else:
        print(f"integration {args.integration} is already paused")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)

    def change(status: IntegrationStatus, generation: int | None) -> IntegrationStatus | None:
        return resumed(status, _now(), generation) if _paused(status) else None

    done = []
    if _write(kube, namespace, args.integration, change, ["conditions", "consecutiveFailures"]):
        done.append("no longer paused")
    if (get_integration(kube, namespace, args.integration).get("spec") or {}).get("suspend"):
        kube_runs.patch_integration_spec(kube, namespace, args.integration, {"suspend": False})
        done.append("no longer suspended (spec.suspend: false)")
    if not done:
        print(f"integration {args.integration} is not paused or suspended")
        return 0
    print(f"integration {args.integration} resumed: " + ", ".join(done))
    if len(done) > 1 or "suspended" in done[0]:
        print(GITOPS_NOTE)
    return 0


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _paused(status: IntegrationStatus) -> bool:
    paused = find_condition(status.conditions, PAUSED)
    return paused is not None and paused.status is ConditionStatus.TRUE


def _write(kube: Kube, namespace: str, name: str, change: Any, fields: list[str]) -> bool:
    """Apply `change` to the Integration's status against a fresh read, guarded by its
    resourceVersion; False when there was nothing to change."""
    for _ in range(5):
        obj = get_integration(kube, namespace, name)
        status = IntegrationStatus.model_validate(obj.get("status") or {})
        new = change(status, obj["metadata"].get("generation"))
        if new is None:
            return False
        dumped = new.model_dump(mode="json", by_alias=True, exclude_none=True)
        body = {field: dumped.get(field) for field in fields}
        version = obj["metadata"]["resourceVersion"]
        if kube_runs.patch_integration_status(kube, namespace, name, body, version):
            return True
    raise CliError(f"integration {name} kept changing; try again")
