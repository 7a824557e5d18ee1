"""A key generated once into a file of the state folder, for local use only (links, sessions on this machine):
created with mode 0600 by whichever process gets there first, read by every other."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def generated_key(path: Path) -> str:
    """The key in `path`, written first (48 random URL-safe bytes) when there is none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
