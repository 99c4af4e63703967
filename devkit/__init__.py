"""Development and test harness: a real Kubernetes control plane and a local node.

Not part of the product's wheel.
"""
