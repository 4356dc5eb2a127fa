"""Prefect flows: thin orchestration."""
