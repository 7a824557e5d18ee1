"""A PostgreSQL schema of its own for one test: the URL it returns puts every table there (search_path), so tests
sharing the session's server (the `postgres_url` fixture) never see each other's rows, and no code under test
needs a table prefix. The function lives with the local server (the bench uses it too)."""

from __future__ import annotations

from ppo_alerts.localpostgres import fresh_schema

__all__ = ["fresh_schema"]
