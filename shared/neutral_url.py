"""Base URLs that may carry acknowledgement links (to court recipients too): a pure check with no imports from
this project, so settings (start-up) and shared.ack (sending) both use it without importing each other."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["REVEALS_PPO", "base_url_problem"]

# The words a court recipient must never read (the renderer refuses a court message containing them).
REVEALS_PPO = re.compile(r"(?<![a-z])ppos?(?![a-z])|prolific|priority[\s_-]*offender", re.IGNORECASE)


def base_url_problem(url: str, neutral: bool = True) -> str | None:
    """Why this base URL cannot carry acknowledgement links (to court recipients too, when `neutral`), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an http(s) URL"
    if parts.query or parts.fragment:
        return f"{url!r}: a base URL has no query or fragment"
    if neutral and REVEALS_PPO.search(url):
        return (f"{url!r} says PPO: court recipients get these links and must never be told a person is a PPO "
                "(001 §6.3, §7.2); use a neutral host and path")
    return None
