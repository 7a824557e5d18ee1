"""The fault suite writes docs/reliability.md once, after all its files have run (PPO_FAULTS_WRITE_DOCS=1, as
./scripts/faults sets it), from the rows every scenario added."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import evidence


@pytest.fixture(scope="session", autouse=True)
def reliability_doc() -> Iterator[None]:
    yield
    if os.environ.get("PPO_FAULTS_WRITE_DOCS") == "1" and evidence.RESULTS:
        evidence.write_reliability_doc(Path(__file__).resolve().parents[2] / "docs" / "reliability.md")
