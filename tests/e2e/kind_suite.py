"""`make e2e-kind`: the kind tier, end to end, on a machine with docker and kind.

    python -m tests.e2e.kind_suite [pytest arguments]
    python -m tests.e2e.kind_suite --check     # only step 1 (standard library only)

1. Checks the tools at once (docker answering, kind, kubectl, helm) and stops with a clear
   message, exit code 3, when one is missing: nothing is created.
2. Creates the cluster from kind-config.yaml and loads the images `make images` built.
3. Runs tests/e2e (pytest) against it: two tenants installed with the chart, the examples
   applied, signed events sent, runs succeed, tenants isolated (test_two_tenants.py).
4. On failure, dumps the logs (`kind export logs`, and each tenant's operator and gateway
   logs) into $DOCRELAY_E2E_LOGS (default ./e2e-logs).
5. Deletes the cluster (unless DOCRELAY_E2E_KEEP=1).

Images: $IMAGE_REPO/docrelay:$IMAGE_TAG, $IMAGE_REPO/runner:<python> for each of
$RUNNER_PYTHONS and $IMAGE_REPO/runner-node:<nodejs> for each of $RUNNER_NODES (the
Makefile's names). $DOCKER and $KIND name the tools (default: docker, kind).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "kind-config.yaml"
CLUSTER = "docrelay-e2e"  # kind-config.yaml's name
CONTEXT = f"kind-{CLUSTER}"
EXIT_MISSING = 3
NAMESPACES = ("e2e-alpha", "e2e-beta")  # test_two_tenants.py installs into these


def images() -> list[str]:
    repo = os.environ.get("IMAGE_REPO", "ghcr.io/docrelay")
    tag = os.environ.get("IMAGE_TAG", "0.1.0")
    pythons = os.environ.get("RUNNER_PYTHONS", "3.11 3.12 3.13").split()
    nodes = os.environ.get("RUNNER_NODES", "20 22").split()
    return [
        f"{repo}/docrelay:{tag}",
        *(f"{repo}/runner:{python}" for python in pythons),
        *(f"{repo}/runner-node:{node}" for node in nodes),
    ]


def missing_tools(
    which: Callable[[str], str | None] = shutil.which,
    answers: Callable[[list[str]], bool] | None = None,
) -> list[str]:
    """What this machine lacks for the kind tier, as sentences; [] when all is there."""

    def runs(argv: list[str]) -> bool:
        try:
            return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    answers = answers or runs
    problems = []
    docker = os.environ.get("DOCKER", "docker")
    if which(docker) is None:
        problems.append(f"no container engine: `{docker}` not found")
    elif not answers([docker, "info"]):
        problems.append(f"`{docker} info` fails: the container engine is not running")
    for tool, hint in (
        (os.environ.get("KIND", "kind"), "go install sigs.k8s.io/kind@latest"),
        ("kubectl", "make toolchain"),
        ("helm", "make toolchain"),
    ):
        if which(tool) is None:
            problems.append(f"`{tool}` not found ({hint})")
    return problems


def preflight() -> int:
    problems = missing_tools()
    if not problems:
        return 0
    print("make e2e-kind: cannot run here; nothing was created:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    print(
        "The kind tier needs docker (or a docker-compatible engine) and kind. tests/cluster "
        "covers the same behaviour on the local control plane (make test-cluster).",
        file=sys.stderr,
    )
    return EXIT_MISSING


def run(*argv: str, check: bool = True) -> int:
    print("+", " ".join(argv), flush=True)
    return subprocess.run(argv, check=check).returncode


def dump_logs(directory: Path) -> None:
    """Everything needed to see why: kind's node logs, and each tenant's components."""
    directory.mkdir(parents=True, exist_ok=True)
    kind = os.environ.get("KIND", "kind")
    run(kind, "export", "logs", str(directory / "kind"), "--name", CLUSTER, check=False)
    for namespace in NAMESPACES:
        with (directory / f"{namespace}.txt").open("w") as out:
            for argv in (
                ["get", "all,integrations,integrationruns,integrationsecrets,events", "-o", "wide"],
                ["logs", "-l", "app.kubernetes.io/component=operator", "--tail=-1"],
                ["logs", "-l", "app.kubernetes.io/component=gateway", "--tail=-1", "--prefix"],
                ["describe", "pods"],
            ):
                out.write(f"\n$ kubectl -n {namespace} {' '.join(argv)}\n")
                out.flush()
                subprocess.run(
                    ["kubectl", "--context", CONTEXT, "-n", namespace, *argv],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
    print(f"e2e-kind: logs are in {directory}", file=sys.stderr)


def main(pytest_args: list[str]) -> int:
    code = preflight()
    if code or pytest_args == ["--check"]:
        return code
    kind = os.environ.get("KIND", "kind")
    run(kind, "create", "cluster", "--config", str(CONFIG), "--wait", "180s")
    try:
        run(kind, "load", "docker-image", *images(), "--name", CLUSTER)
        env = {**os.environ, "DOCRELAY_E2E_CONTEXT": CONTEXT}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", str(REPO_ROOT / "tests" / "e2e"), *pytest_args],
            env=env,
            check=False,
        )
        if result.returncode != 0:
            dump_logs(Path(os.environ.get("DOCRELAY_E2E_LOGS", "e2e-logs")).resolve())
        return result.returncode
    finally:
        if os.environ.get("DOCRELAY_E2E_KEEP") == "1":
            print(f"e2e-kind: cluster kept (kubectl --context {CONTEXT})", file=sys.stderr)
        else:
            run(kind, "delete", "cluster", "--name", CLUSTER, check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
