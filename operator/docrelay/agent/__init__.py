"""The agent: writes integration code from instructions and proposes fixes for failed runs.

`prompts`, `codecheck` and `loop` are pure (no I/O); `providers` is the only module that talks
HTTP (to a language model). Kubernetes wiring lives elsewhere (docs/agent.md).
"""
