"""Pure manifest builders: models and values in, Kubernetes object dicts out. No I/O."""
