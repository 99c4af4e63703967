"""`make e2e-kind`: the kind tier, end to end.

    python -m tests.e2e.kind_suite [pytest arguments]
    python -m tests.e2e.kind_suite --check     # only step 1 (standard library only)

1. Checks the tools at once (a container engine, kind, kubectl, helm) and stops with a clear
   message, exit code 3, when one is missing: nothing is created.
2. Picks the engine and the node image. Where ``docker info`` answers (DOCKER_HOST, or a
   daemon on this machine), kind uses it and pulls kind-config.yaml's ``kindest/node``. Where
   none answers but this machine can run one (root, Debian's docker.io), devkit.engine starts
   Docker in a private network namespace, the node image is made here from the toolchain's
   binaries (devkit.kind; no registry needed) and every step below runs inside that
   namespace. ``DOCRELAY_KIND_NODE_IMAGE`` names another node image (``local``: make it here).
3. Creates the cluster from kind-config.yaml (plus this machine's two settings when it needs
   them: ``machine_patches``) and loads the images `make images` built.
4. Runs tests/e2e (pytest) against it: two tenants installed with the chart, the examples
   applied, signed events sent, runs succeed, tenants isolated (test_two_tenants.py).
5. On failure, dumps the logs (`kind export logs`, and each tenant's operator and gateway
   logs) into $DOCRELAY_E2E_LOGS (default ./e2e-logs).
6. Deletes the cluster (unless DOCRELAY_E2E_KEEP=1).

Images: $IMAGE_REPO/docrelay:$IMAGE_TAG, $IMAGE_REPO/runner:<python> for each of
$RUNNER_PYTHONS and $IMAGE_REPO/runner-node:<nodejs> for each of $RUNNER_NODES (the
Makefile's names). $DOCKER and $KIND name the tools (default: docker, and kind from PATH or
the toolchain's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "kind-config.yaml"
STATE = REPO_ROOT / ".devkit" / "kind"  # the config used, the kubeconfig
CLUSTER = "docrelay-e2e"  # kind-config.yaml's name
CONTEXT = f"kind-{CLUSTER}"
EXIT_MISSING = 3
NAMESPACES = ("e2e-alpha", "e2e-beta")  # test_two_tenants.py installs into these


def images() -> list[str]:
    """What `make images` builds (devkit.images: the Makefile's names and defaults)."""
    from devkit import images as product

    repo = product.image_repo()
    return [
        f"{repo}/docrelay:{product.image_tag()}",
        *(f"{repo}/runner:{python}" for python in product.runner_pythons()),
        *(f"{repo}/runner-node:{node}" for node in product.runner_nodes()),
    ]


def private_engine_possible(which: Callable[[str], str | None] = shutil.which) -> bool:
    """True where devkit.engine can run Docker in a private namespace (root, docker.io)."""
    return os.geteuid() == 0 and all(which(t) for t in ("dockerd", "containerd", "unshare"))


def kind_command(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """$KIND, else kind on PATH, else "toolchain" when Go can build it (devkit/toolchain)."""
    explicit = os.environ.get("KIND", "")
    if explicit:
        return explicit if which(explicit) else None
    if which("kind"):
        return "kind"
    return "toolchain" if which("go") else None


def missing_tools(
    which: Callable[[str], str | None] = shutil.which,
    answers: Callable[[list[str]], bool] | None = None,
    private_engine: Callable[[], bool] | None = None,
) -> list[str]:
    """What this machine lacks for the kind tier, as sentences; [] when all is there."""

    def runs(argv: list[str]) -> bool:
        try:
            return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    answers = answers or runs
    private_engine = private_engine or (lambda: private_engine_possible(which))
    problems = []
    docker = os.environ.get("DOCKER", "docker")
    if which(docker) is None:
        problems.append(f"no container engine: `{docker}` not found")
    elif not answers([docker, "info"]) and not private_engine():
        problems.append(f"`{docker} info` fails: the container engine is not running")
    if kind_command(which) is None:
        kind = os.environ.get("KIND") or "kind"
        problems.append(
            f"`{kind}` not found (make toolchain builds it with Go, "
            "or go install sigs.k8s.io/kind@v0.33.0)"
        )
    for tool in ("kubectl", "helm"):
        if which(tool) is None:
            problems.append(f"`{tool}` not found (make toolchain)")
    return problems


def preflight() -> int:
    problems = missing_tools()
    if not problems:
        return 0
    print("make e2e-kind: cannot run here; nothing was created:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    print(
        "The kind tier needs docker (or a docker-compatible engine, or root and Debian's "
        "docker.io for a private one) and kind. tests/cluster covers the same behaviour on the "
        "local control plane (make test-cluster).",
        file=sys.stderr,
    )
    return EXIT_MISSING


def machine_patches(
    cgroup_root: Path = Path("/sys/fs/cgroup"), status: Path = Path("/proc/self/status")
) -> str:
    """kind-config.yaml additions this machine needs, as YAML text ("" when none).

    Not recommendations: the kubelet refuses cgroup v1 since v1.35 unless told
    ``failCgroupV1: false``, and where processes lack CAP_SYS_RESOURCE, runc cannot lower a
    pod's oom_score_adj ("failed to update /proc/self/oom_score_adj: Permission denied") unless
    containerd restricts it (``restrict_oom_score_adj``)."""
    text = ""
    if not (cgroup_root / "cgroup.controllers").exists():
        text += (
            "# Added by tests/e2e/kind_suite.py: this machine has cgroup v1.\n"
            "kubeadmConfigPatches:\n"
            "  - |\n"
            "    kind: KubeletConfiguration\n"
            "    failCgroupV1: false\n"
        )
    bounding = next(
        (int(line.split()[1], 16) for line in status.read_text().splitlines()
         if line.startswith("CapBnd:")),
        -1,
    )
    cap_sys_resource = 24
    if bounding >= 0 and not bounding & (1 << cap_sys_resource):
        text += (
            "# Added by tests/e2e/kind_suite.py: processes here lack CAP_SYS_RESOURCE.\n"
            "containerdConfigPatches:\n"
            "  - |-\n"
            '    [plugins."io.containerd.grpc.v1.cri"]\n'
            "      restrict_oom_score_adj = true\n"
        )
    return text


def cluster_config(patches: str) -> Path:
    """kind-config.yaml, with this machine's patches added when it needs any: each list
    (kubeadmConfigPatches, containerdConfigPatches) extended, kind applying its entries in
    order, so kind-config.yaml's own patches stay as they are."""
    if not patches:
        return CONFIG
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    for key, entries in yaml.safe_load(patches).items():
        config[key] = [*(config.get(key) or []), *entries]
    STATE.mkdir(parents=True, exist_ok=True)
    path = STATE / "kind-config.yaml"
    path.write_text(
        "# kind-config.yaml and this machine's settings (tests/e2e/kind_suite.py):\n"
        + "".join(f"{line}\n" for line in patches.splitlines() if line.startswith("#"))
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


class Setup:
    """Where the suite's commands run: the engine, its namespace prefix, the node image."""

    def __init__(self) -> None:
        docker = os.environ.get("DOCKER", "docker")
        self.env = dict(os.environ)
        self.prefix: list[str] = []
        self.node_image = os.environ.get("DOCRELAY_KIND_NODE_IMAGE", "")
        if not _answers([docker, "info"]):
            # No engine answers: Debian's docker.io in a private network namespace. No
            # registry is reachable from there, so the node image is made here.
            from devkit import engine

            self.env = engine.docker_env()
            self.prefix = engine.nsenter_prefix()
            self.node_image = self.node_image or "local"
        self.made_here = self.node_image == "local"
        if self.made_here:
            from devkit import kind as kind_images

            saved = dict(os.environ)
            os.environ.update(self.env)
            try:
                self.node_image = kind_images.node_image()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        self.kind = kind_command()
        if self.kind == "toolchain":
            from devkit import toolchain

            self.kind = str(toolchain.ensure("kind"))
        STATE.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = STATE / "kubeconfig"
        self.env["KUBECONFIG"] = str(self.kubeconfig)

    def run(self, *argv: str, check: bool = True, **kwargs: object) -> int:
        print("+", " ".join(argv), flush=True)
        return subprocess.run(
            [*self.prefix, *argv], env=self.env, check=check, **kwargs  # type: ignore[call-overload]
        ).returncode


def _answers(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def dump_logs(setup: Setup, directory: Path) -> None:
    """Everything needed to see why: kind's node logs, and each tenant's components."""
    directory.mkdir(parents=True, exist_ok=True)
    assert setup.kind is not None
    setup.run(setup.kind, "export", "logs", str(directory / "kind"), "--name", CLUSTER,
              check=False)
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
                setup.run("kubectl", "--context", CONTEXT, "-n", namespace, *argv,
                          check=False, stdout=out, stderr=subprocess.STDOUT)
    print(f"e2e-kind: logs are in {directory}", file=sys.stderr)


def load_images(setup: Setup) -> None:
    """Load `make images`' images into the nodes (each runner image its runtime's runs use)."""
    try:
        from devkit import images as product

        archives = product.archives()
    except ImportError:
        archives = {}
    assert setup.kind is not None
    for ref in images():
        if ref in archives:
            setup.run(setup.kind, "load", "image-archive", str(archives[ref]), "--name", CLUSTER)
        elif setup.run(DOCKER_INSPECT[0], *DOCKER_INSPECT[1:], ref, check=False,
                       stdout=subprocess.DEVNULL) == 0:
            setup.run(setup.kind, "load", "docker-image", ref, "--name", CLUSTER)
        else:
            print(f"e2e-kind: {ref} was not built here; not loaded", file=sys.stderr)


DOCKER_INSPECT = [os.environ.get("DOCKER", "docker"), "image", "inspect"]


def policy_enforcer(setup: Setup) -> None:
    """Where this kernel cannot run kindnetd's NetworkPolicy enforcer (no nftables queue
    expression), kube-router's enforces them instead: the suite checks they hold."""
    from devkit import kind as kind_images

    if not kind_images.nft_queue_missing():
        return
    print("e2e-kind: this kernel lacks nftables' queue expression, which kindnetd's "
          "NetworkPolicy enforcer needs; kube-router's enforces them", file=sys.stderr)
    # What the tests say if a run's first moment was not fenced (docs/development.md).
    setup.env["DOCRELAY_E2E_POLICY_ENFORCER"] = (
        "NetworkPolicies are enforced here by kube-router, because this kernel lacks nftables' "
        "queue expression (CONFIG_NFT_QUEUE), which kindnetd's enforcer needs; kube-router "
        "programs a new pod only after it has started, so a run connecting in its first moment "
        "may not be fenced yet (docs/egress.md, threat model)"
    )
    image = kind_images.kube_router_image()
    if not setup.made_here:  # a node image made here carries it already
        setup.run(setup.kind or "kind", "load", "docker-image", image, "--name", CLUSTER)
    manifests = {"apiVersion": "v1", "kind": "List",
                 "items": kind_images.kube_router_manifests(image)}
    setup.run("kubectl", "--context", CONTEXT, "apply", "-f", "-",
              input=json.dumps(manifests).encode())
    setup.run("kubectl", "--context", CONTEXT, "-n", "kube-system", "rollout", "status",
              "daemonset/kube-router", "--timeout=180s")


def main(pytest_args: list[str]) -> int:
    code = preflight()
    if code or pytest_args == ["--check"]:
        return code
    setup = Setup()
    assert setup.kind is not None
    create = [setup.kind, "create", "cluster", "--config", str(cluster_config(machine_patches())),
              "--kubeconfig", str(setup.kubeconfig), "--wait", "300s"]
    if setup.node_image:
        create += ["--image", setup.node_image]
    setup.run(*create)
    try:
        policy_enforcer(setup)
        load_images(setup)
        setup.env["DOCRELAY_E2E_CONTEXT"] = CONTEXT
        code = setup.run(sys.executable, "-m", "pytest", str(REPO_ROOT / "tests" / "e2e"),
                         *pytest_args, check=False)
        if code != 0:
            dump_logs(setup, Path(os.environ.get("DOCRELAY_E2E_LOGS", "e2e-logs")).resolve())
        return code
    finally:
        if os.environ.get("DOCRELAY_E2E_KEEP") == "1":
            print(f"e2e-kind: cluster kept (KUBECONFIG={setup.kubeconfig} kubectl --context "
                  f"{CONTEXT}{'; inside ' + ' '.join(setup.prefix) if setup.prefix else ''})",
                  file=sys.stderr)
        else:
            setup.run(setup.kind, "delete", "cluster", "--name", CLUSTER,
                      "--kubeconfig", str(setup.kubeconfig), check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
