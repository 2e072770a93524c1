"""Thin helpers over the Kubernetes API client (kubernetes_asyncio), shared by the components."""
