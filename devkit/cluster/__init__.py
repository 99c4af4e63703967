"""A real Kubernetes control plane and the local node, as processes on this machine."""

from devkit.cluster.controlplane import BROKER_AUDIENCE, NODE_NAME, Cluster, ClusterError

__all__ = ["BROKER_AUDIENCE", "NODE_NAME", "Cluster", "ClusterError"]
