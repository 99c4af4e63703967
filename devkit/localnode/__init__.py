"""The local node: a small kubelet stand-in that runs pods as local processes.

Dev and test only. It registers a Node with a real API server, runs the pods the real
scheduler binds to it in per-container mount and PID namespaces (see ``sandbox``), reports
their status as the kubelet does and serves the kubelet's container-log endpoint. See
docs/localnode.md for what it honours and what it ignores.
"""
