"""`docrelay logs RUN [-f]`: a run's log, live from its pod while it runs, else the stored copy
(masked by the operator, kept after the Job and pod are gone)."""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from typing import Any

from docrelay.builders.run import CONTAINER, LOG_KEY, log_config_map_name
from docrelay.cli.common import CliError, connect
from docrelay.kube import Kube
from docrelay.kube import runs as kube_runs
from docrelay.naming import job_name

POLL_SECONDS = 0.5
FINISHED = {"Succeeded", "Failed", "TimedOut", "DeadLettered", "Cancelled"}


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "logs",
        parents=parents,
        help="print a run's log",
        description=(
            "Print the log of a run's attempt (default: the current or last one): from its pod "
            "while it runs, else the copy the operator stored with secret values masked."
        ),
    )
    parser.add_argument("run_name", metavar="RUN", help="the IntegrationRun's name")
    parser.add_argument("-f", "--follow", action="store_true", help="follow while it runs")
    parser.add_argument("--attempt", type=int, help="the attempt (default: the current one)")
    parser.set_defaults(run=run)


def stored_log(kube: Kube, namespace: str, run: str, attempt: int) -> str | None:
    data = kube_runs.read_config_map_binary(
        kube, namespace, log_config_map_name(run, attempt), LOG_KEY
    )
    return gzip.decompress(data).decode("utf-8", errors="replace") if data else None


def live_pod(kube: Kube, namespace: str, run: str, attempt: int) -> str | None:
    pods = kube_runs.job_pods(kube, namespace, job_name(run, attempt))
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if any("running" in (s.get("state") or {}) for s in statuses):
            return str(pod["metadata"]["name"])
    return None


def print_run_log(kube: Kube, namespace: str, name: str, attempt: int | None, follow: bool) -> None:
    """Print one attempt's log; with `follow`, wait for it to start and stream it."""
    while True:
        run = kube.get(kube_runs.RUNS, namespace, name)
        if run is None:
            raise CliError(f"run {name} not found in namespace {namespace}")
        status = run.get("status") or {}
        chosen = attempt or int(status.get("attempt") or 0)
        phase = status.get("phase")
        if chosen:
            stored = stored_log(kube, namespace, name, chosen)
            if stored is not None:
                sys.stdout.write(stored)
                return
            pod = live_pod(kube, namespace, name, chosen) if phase not in FINISHED else None
            if pod is not None:
                if not follow:
                    text = kube_runs.pod_log(kube, namespace, pod, CONTAINER, 8 * 1024 * 1024)
                    sys.stdout.write(text or "")
                    return
                for chunk in kube_runs.follow_pod_log(kube, namespace, pod, CONTAINER):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
                return
        if phase in FINISHED or not follow:
            if not chosen:
                raise CliError(f"run {name} has not started an attempt yet")
            raise CliError(f"no log stored for attempt {chosen} of run {name} (yet)")
        time.sleep(POLL_SECONDS)


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    print_run_log(kube, namespace, args.run_name, args.attempt, args.follow)
    return 0
