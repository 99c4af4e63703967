"""python -m devkit.demo: start the local cluster and show a pod really running.

Later issues grow this into the whole story (an event in, a run, its logs, the export).
The cluster is left running so it can be explored; `make cluster-down` stops it.
"""

from __future__ import annotations

import sys
import time

from kubernetes import client, config

from devkit import toolchain
from devkit.cluster import Cluster
from devkit.cluster.__main__ import DEFAULT_STATE_DIR

NAMESPACE = "docrelay-demo"
SCRIPT = (
    "import os, platform; "
    "print('hello from pod', os.environ['POD_NAME'], 'on', platform.node()); "
    "print('python', platform.python_version(), 'pid', os.getpid(), 'uid', os.getuid()); "
    "open('/tmp/scratch', 'w').write('a private /tmp is writable'); "
    "print('root filesystem writable:', os.access('/usr', os.W_OK))"
)


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def main() -> int:
    _step("starting the local cluster (real etcd, kube-apiserver, controllers, scheduler)")
    cluster = Cluster.attach(DEFAULT_STATE_DIR)
    if cluster is None or not cluster.healthy():
        if cluster is not None:
            cluster.stop()
        cluster = Cluster(DEFAULT_STATE_DIR)
        cluster.start(detach=True)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    version = client.VersionApi(api).get_code()
    node = core.read_node("local-node")
    _step(f"Kubernetes {version.git_version}; node {node.metadata.name} is Ready")

    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    _wait_for_service_account(core)
    name = f"hello-{int(time.time())}"
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[
                client.V1Container(
                    name="hello",
                    image="python:3.11-slim",
                    command=["python", "-c", SCRIPT],
                    # Sandboxed as a run pod will be: not root, read-only root filesystem.
                    security_context=client.V1SecurityContext(
                        run_as_user=1000, run_as_non_root=True, read_only_root_filesystem=True
                    ),
                    env=[
                        client.V1EnvVar(
                            name="POD_NAME",
                            value_from=client.V1EnvVarSource(
                                field_ref=client.V1ObjectFieldSelector(field_path="metadata.name")
                            ),
                        )
                    ],
                )
            ],
        ),
    )
    core.create_namespaced_pod(NAMESPACE, pod)
    _step(f"created pod {NAMESPACE}/{name}; the scheduler binds it, the local node runs it")
    last = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = core.read_namespaced_pod(name, NAMESPACE)
        phase = current.status.phase
        if phase != last:
            print(f"    phase: {phase} (node: {current.spec.node_name or '-'})", flush=True)
            last = phase
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.3)
    log = core.read_namespaced_pod_log(name, NAMESPACE)
    _step("its log, read through the API server (pods/log):")
    for line in log.splitlines():
        print(f"    {line}")
    print()
    print("Explore it:")
    print(f"    export KUBECONFIG={cluster.kubeconfig}")
    print(f"    export PATH={toolchain.bin_dir()}:$PATH")
    print(f"    kubectl -n {NAMESPACE} get pods")
    print(f"    kubectl -n {NAMESPACE} logs {name}")
    print("    make cluster-down   # when done")
    return 0 if last == "Succeeded" else 1


def _wait_for_service_account(core: client.CoreV1Api) -> None:
    for _ in range(100):
        try:
            core.read_namespaced_service_account("default", NAMESPACE)
            return
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
