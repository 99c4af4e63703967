"""A real Kubernetes node beside the devkit control plane, inside the harness's namespace.

kubelet, containerd 2 with runc, Debian's CNI plugins (bridge + host-local), kube-proxy
(iptables), CoreDNS (a pod, as kube-dns) and kube-router's NetworkPolicy controller, all
built by ``devkit.toolchain`` and run as processes. Every address below is private; they
exist only inside the network namespace ``devkit.realnode.namespace`` creates (never call
``RealNode.start`` outside it: it changes that namespace's interfaces, routes and iptables).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from devkit import toolchain
from devkit.cluster.controlplane import SERVICE_CLUSTER_IP_RANGE, Cluster, _pid_alive, _terminate
from devkit.realnode import images

NODE_NAME = "realnode"
# The node's own address, where the API server is advertised (the `kubernetes` Service's
# endpoint) and the kubelet serves.
NODE_IP = "10.250.0.1"
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DNS = "10.0.0.10"  # in SERVICE_CLUSTER_IP_RANGE
BRIDGE = "cni0"
# cgroupfs (cgroup v1 here): each run's pods live under CGROUP_ROOT/<its state dir's name>,
# so two runs on one machine never share (or remove) each other's groups.
CGROUP_ROOT = "docrelay-realnode"
# Paths the kubelet, containerd, its shims and the CNI library use whatever they are told:
# each gets a fresh tmpfs in the harness's private mount namespace, so nothing of the node
# ever appears in the machine's own.
PRIVATE_PATHS = ("/run", "/var/lib/cni", "/var/log/containers")

Log = Callable[[str], None]


class NodeError(RuntimeError):
    """A node component failed to start; the message names it and ends with its log."""


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if check and proc.returncode != 0:
        raise NodeError(
            f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return proc.stdout


class RealNode:
    """The node's processes under ``state_dir``; ``cluster`` is the running control plane."""

    def __init__(self, state_dir: Path, cluster: Cluster) -> None:
        self.state_dir = state_dir.resolve()
        self.cluster = cluster
        self.log_dir = cluster.log_dir
        self.kubeconfig = cluster.kubeconfig
        self.socket = self.state_dir / "containerd" / "containerd.sock"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.binaries: dict[str, Path] = {}
        self.cgroup = cgroup_name(self.state_dir)

    # -- lifecycle -------------------------------------------------------------------------

    def prepare(self) -> None:
        """The namespace's paths, interfaces and the node's cgroup: before the API server."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._private_paths()
        self._network()
        self._cgroups()

    def start(self, *, log: Log, archives: dict[str, Path], timeout: float = 180) -> None:
        """containerd (``archives`` imported), kubelet, kube-proxy, kube-router, CoreDNS."""
        started = time.monotonic()
        deadline = started + timeout
        self.binaries = toolchain.ensure_realnode(log=log)
        try:
            self._spawn("containerd", self._containerd_args())
            self._wait("containerd", self.socket.exists, deadline)
            self._import(archives, log)
            self._spawn("kubelet", self._kubelet_args())
            self._wait("kubelet", self._node_registered, deadline)
            self._set_pod_cidr()
            self._spawn("kube-proxy", self._kube_proxy_args())
            self._spawn("kube-router", self._kube_router_args())
            self._wait("kubelet", self._node_ready, deadline)
            # Admission taints a new Node not-ready; the node lifecycle controller that lifts
            # it does not run in the devkit control plane.
            self._kubectl("taint", "node", NODE_NAME, "node.kubernetes.io/not-ready-",
                          check=False)
            self._coredns()
            self._wait("coredns", self._coredns_ready, deadline)
        except BaseException:
            self.stop()
            raise
        log(f"[realnode] node {NODE_NAME} ready in {time.monotonic() - started:.0f}s")

    def stop(self) -> None:
        """Pods first (the kubelet kills them when their namespaces go), then the processes.

        Whatever is left (container shims) dies with the harness's PID namespace.
        """
        for name in ("kube-router", "kube-proxy", "kubelet", "containerd"):
            process = self._processes.pop(name, None)
            if process is not None:
                _terminate(process.pid, process, grace=10)

    # -- set-up ------------------------------------------------------------------------------

    def _private_paths(self) -> None:
        for path in PRIVATE_PATHS:
            Path(path).mkdir(parents=True, exist_ok=True)
            run("mount", "-t", "tmpfs", "-o", "mode=755,size=256m", "tmpfs", path)

    def _network(self) -> None:
        run("ip", "link", "set", "lo", "up")
        # The node's own address lives on lo (this kernel has no dummy links): the API server
        # advertises it, the kubelet serves on it, pods reach it through the bridge.
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo")
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/route_localnet", "1"),
        ):
            Path("/proc/sys", key).write_text(value)
        # The bridge the CNI plugin uses, made now so br_netfilter's switch exists: pod to
        # Service to pod on the same bridge must pass through kube-proxy's iptables rules.
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{POD_GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Service addresses (and anything else) need a route before kube-proxy's DNAT picks
        # the real destination, a pod or this node; there is no outside to reach.
        run("ip", "route", "add", "default", "dev", BRIDGE)
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if bridge_nf.exists():
            bridge_nf.write_text("1")
        cni = {
            "cniVersion": "1.0.0",
            "name": "docrelay-realnode",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                        "dataDir": str(self.state_dir / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        conf_dir = self.state_dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-docrelay.conflist").write_text(json.dumps(cni, indent=2))
        # Pods' upstream resolver file (dnsPolicy Default): there is no outside world here.
        (self.state_dir / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")

    def _cgroups(self) -> None:
        for controller in _cgroup_controllers():
            (controller / self.cgroup).mkdir(parents=True, exist_ok=True)

    def _import(self, archives: dict[str, Path], log: Log) -> None:
        ctr = [str(self.binaries["ctr"]), "--address", str(self.socket), "-n", "k8s.io"]
        for name, path in archives.items():
            log(f"[realnode] importing {name} ({path.stat().st_size / 1e6:.0f} MB)")
            run(*ctr, "images", "import", str(path))
            named = images.archive_names(path)
            if name not in named and len(named) == 1:  # --archive REF=TAR: the tar's image as REF
                run(*ctr, "images", "tag", "--force", named[0], name)
        listed = run(*ctr, "images", "list", "-q").split()
        missing = [name for name in archives if name not in listed]
        if missing:
            raise NodeError(f"containerd did not list {missing} after importing them")

    def _set_pod_cidr(self) -> None:
        # What the node IPAM controller would do (it does not run here): kube-router and
        # kube-proxy read the node's pod range from it.
        self._kubectl("patch", "node", NODE_NAME, "--type=merge",
                      "-p", json.dumps({"spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]}}))

    def _coredns(self) -> None:
        self._kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(coredns_manifests()))

    # -- configuration -----------------------------------------------------------------------

    def _containerd_args(self) -> list[str]:
        root = self.state_dir / "containerd"
        config = f"""version = 3
root = "{root / 'root'}"
state = "{root / 'state'}"

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  # This machine's processes lack CAP_SYS_RESOURCE: runc cannot lower a pod's oom_score_adj
  # below containerd's own, and every sandbox would fail without this.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{self.state_dir / 'cni' / 'net.d'}"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{self.binaries['runc']}"
        SystemdCgroup = false
"""
        path = root / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config)
        return [str(self.binaries["containerd"]), "--config", str(path), "--log-level", "warn"]

    def _kubelet_args(self) -> list[str]:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 on this machine: since v1.35 the kubelet refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup}",
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.cluster.pki.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [CLUSTER_DNS],
            "resolvConf": str(self.state_dir / "resolv.conf"),
            "failSwapOn": False,
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "imageServiceEndpoint": f"unix://{self.socket}",
            # A test machine's disk and memory are what they are: never evict for them.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podPidsLimit": 1024,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "localStorageCapacityIsolation": True,
        }
        path = self.state_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return [
            str(self.binaries["kubelet"]),
            f"--config={path}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.state_dir / 'kubelet'}",
            f"--cert-dir={self.state_dir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ]

    def _kube_proxy_args(self) -> list[str]:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Conntrack limits are the machine's (not settable from a network namespace).
            "conntrack": {"maxPerCore": 0, "min": 0},
        }
        path = self.state_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return [str(self.binaries["kube-proxy"]), f"--config={path}", "--v=1"]

    def _kube_router_args(self) -> list[str]:
        return [
            str(self.binaries["kube-router"]),
            f"--kubeconfig={self.kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-ipv4=true",
            "--enable-ipv6=false",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--metrics-port=0",
            "--health-port=20244",
            "--v=1",
        ]

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # containerd finds its shim on PATH; kube-router and kube-proxy find iptables/ipset.
        env["PATH"] = os.pathsep.join(
            [str(self.binaries["containerd-shim-runc-v2"].parent), "/usr/sbin", "/sbin",
             env.get("PATH", "")]
        )
        with (self.log_dir / f"{name}.log").open("ab") as log_file:
            self._processes[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )

    def _wait(self, name: str, ready: Callable[[], bool], deadline: float) -> None:
        while time.monotonic() < deadline:
            process = self._processes.get(name)
            if process is not None and not _pid_alive(process.pid, process):
                raise NodeError(f"{name} exited during start-up; its log:\n{self.tail(name)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.5)
        raise NodeError(f"{name} was not ready in time; its log:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return f"{path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        kubectl = toolchain.ensure("kubectl")
        return run(str(kubectl), f"--kubeconfig={self.kubeconfig}", *args, input=stdin,
                   check=check)

    def _get(self, *args: str) -> dict:
        return json.loads(self._kubectl("get", *args, "-o", "json"))

    def _node_registered(self) -> bool:
        return bool(self._get("node", NODE_NAME))

    def _node_ready(self) -> bool:
        conditions = self._get("node", NODE_NAME).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _coredns_ready(self) -> bool:
        deployment = self._get("deployment", "-n", "kube-system", "coredns")
        return (deployment.get("status") or {}).get("readyReplicas", 0) >= 1


def _cgroup_controllers(root: Path = Path("/sys/fs/cgroup"), *, unified: bool = False
                        ) -> list[Path]:
    """v2: the one hierarchy. v1: each controller's (and, with ``unified``, the hybrid
    v2 mount where runc also makes groups)."""
    if (root / "cgroup.controllers").exists():
        return [root]
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink()
            and (unified or p.name != "unified")]


def cgroup_name(state_dir: Path) -> str:
    """The node's cgroup, relative to each hierarchy's root: one per run (state directory)."""
    return f"{CGROUP_ROOT}/{state_dir.parent.name if state_dir.name == 'node' else state_dir.name}"


def remove_cgroups(name: str, root: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """Remove a run's (empty) cgroups, deepest first, once its processes are gone; returns
    the groups still there (a process not yet reaped keeps its group)."""
    left = []
    for controller in _cgroup_controllers(root, unified=True):
        top = controller / name
        if not top.exists():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
        if top.exists():
            left.append(top)
        with contextlib.suppress(OSError):  # the shared parent, once no run uses it
            (controller / CGROUP_ROOT).rmdir()
    return left


def coredns_manifests() -> list[dict]:
    """CoreDNS as kube-dns, as kubeadm installs it, from the image built here."""
    labels = {"k8s-app": "kube-dns"}
    corefile = """.:53 {
    errors
    health {
        lameduck 1s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
"""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "coredns", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns",
                       "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "coredns", "namespace": "kube-system"},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "serviceAccountName": "coredns",
                     "dnsPolicy": "Default",
                     "containers": [{
                         "name": "coredns",
                         "image": images.coredns_image(),
                         "imagePullPolicy": "Never",
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "ports": [
                             {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                             {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                         ],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                         "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                         "resources": {"limits": {"memory": "170Mi"}},
                         "securityContext": {
                             "allowPrivilegeEscalation": False,
                             "readOnlyRootFilesystem": True,
                             "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                         },
                         "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                     }],
                     "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {
             "selector": labels,
             "clusterIP": CLUSTER_DNS,
             "ports": [
                 {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
             ],
         }},
    ]


def dump(kubeconfig: Path, directory: Path, namespaces: list[str]) -> None:
    """What a failing run needs: nodes, pods everywhere, events, and each namespace's logs."""
    directory.mkdir(parents=True, exist_ok=True)
    kubectl = str(toolchain.ensure("kubectl"))
    commands = [["get", "nodes,pods,svc,endpointslices,networkpolicies", "-A", "-o", "wide"],
                ["get", "events", "-A", "--sort-by=.lastTimestamp"]]
    for namespace in namespaces:
        commands += [
            ["-n", namespace, "get",
             "all,integrations,integrationruns,integrationsecrets,events", "-o", "wide"],
            ["-n", namespace, "describe", "pods"],
            ["-n", namespace, "logs", "--all-containers", "--prefix", "--tail=-1",
             "-l", "app.kubernetes.io/name=docrelay"],
        ]
    with (directory / "cluster.txt").open("w") as out:
        for argv in commands:
            out.write(f"\n$ kubectl {' '.join(argv)}\n")
            out.flush()
            subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", *argv], stdout=out,
                           stderr=subprocess.STDOUT, check=False, timeout=120)
    print(f"[realnode] cluster state written to {directory / 'cluster.txt'}", file=sys.stderr)


def copy_logs(log_dir: Path, state_dir: Path, directory: Path) -> None:
    """Every component's log and every container's log file, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if log_dir.exists():
        shutil.copytree(log_dir, directory / "components", dirs_exist_ok=True)
    pod_logs = state_dir / "pod-logs"
    if pod_logs.exists():
        shutil.copytree(pod_logs, directory / "pods", dirs_exist_ok=True,
                        ignore_dangling_symlinks=True)
