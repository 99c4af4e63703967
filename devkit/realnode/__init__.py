"""A real node for the devkit control plane: kubelet, containerd 2, runc, CNI, kube-proxy,
CoreDNS and kube-router, in a private network, mount and PID namespace (docs/realnode.md).

``python -m devkit.realnode run -- COMMAND`` starts it all, runs COMMAND against it, dumps the
logs when COMMAND fails and tears everything down; ``make e2e-node`` runs tests/e2e that way.
"""
