"""A PostgreSQL schema of its own for one test: the URL it returns puts every table there (search_path), so tests
sharing the session's server (the `postgres_url` fixture) never see each other's rows, and no code under test
needs a table prefix."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from sqlalchemy import create_engine, text


def fresh_schema(postgres_url: str, prefix: str = "t") -> str:
    """Create an empty schema; returns `postgres_url` with that schema first on the search path."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{name}"'))
    finally:
        engine.dispose()
    joiner = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{joiner}options={quote(f'-csearch_path={name}')}"
