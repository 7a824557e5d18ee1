"""The console's front-end assets, installed by npm from services/console/frontend/package-lock.json.

govuk-frontend (the GOV.UK Design System's CSS, fonts, images and optional JavaScript) is served by the console as
static files from the installed package, never from a CDN. axe-core is only for the accessibility checks in the
browser tests (tests/accessibility.py); the Docker image carries govuk-frontend's `dist` folder and not axe-core.

Both are installed by `./scripts/setup` (`npm ci --prefix services/console/frontend`); each function here raises
`AssetsMissing`, saying so, when they are not.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["FRONTEND", "AssetsMissing", "axe_source", "govuk_dist", "govuk_version"]

FRONTEND = Path(__file__).parent / "frontend"
NODE_MODULES = FRONTEND / "node_modules"
_GOVUK = NODE_MODULES / "govuk-frontend"
_AXE = NODE_MODULES / "axe-core" / "axe.min.js"
_SETUP = "run ./scripts/setup (npm ci --prefix services/console/frontend)"


class AssetsMissing(RuntimeError):
    """The npm packages of services/console/frontend are not installed."""


def _missing(what: str, path: Path) -> AssetsMissing:
    return AssetsMissing(f"{what} is not installed ({path} not found): {_SETUP}")


def govuk_dist() -> Path:
    """govuk-frontend's `dist/govuk` folder: govuk-frontend.min.css, govuk-frontend.min.js, assets/fonts and
    assets/images. The CSS refers to its fonts and images as `/assets/...` by default, so serve this folder's
    `assets` at `/assets` or rebase them (the Sass `$govuk-assets-path`)."""
    dist = _GOVUK / "dist" / "govuk"
    css = dist / "govuk-frontend.min.css"
    if not css.is_file():
        raise _missing("govuk-frontend", css)
    return dist


def govuk_version() -> str:
    """The installed govuk-frontend's version, from its package.json (e.g. for cache-busting asset URLs)."""
    manifest = _GOVUK / "package.json"
    if not manifest.is_file():
        raise _missing("govuk-frontend", manifest)
    version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if not isinstance(version, str) or not version:
        raise AssetsMissing(f"{manifest} has no version: {_SETUP}")
    return version


def axe_source() -> str:
    """The text of axe-core's axe.min.js, to inject into a page under test."""
    if not _AXE.is_file():
        raise _missing("axe-core", _AXE)
    return _AXE.read_text(encoding="utf-8")
