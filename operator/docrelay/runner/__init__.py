"""The runner: the one process of every run Job (`python -m docrelay.runner`).

Standard library only at import time (cryptography is imported lazily, where it is needed):
it imports none of the operator's layers, no kopf and no Kubernetes client. docs/runner.md
is its contract with the operator.
"""
