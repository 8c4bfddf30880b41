"""Inferia: a self-hosted control plane for LLMs in production."""
