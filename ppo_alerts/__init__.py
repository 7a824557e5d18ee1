"""Entrypoints that compose several services: the `ppo-alerts` CLI and `simulate`."""
