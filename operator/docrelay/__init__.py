"""docrelay: runs document-AI integrations on Kubernetes."""

__version__ = "0.1.0"
