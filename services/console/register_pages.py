"""The coordinator's pages: register changes, the quarterly record, the list review (C6)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from services.console.web import ConsolePages


class RegisterPages:
    def __init__(self, pages: ConsolePages) -> None:
        self.pages = pages

    def routes(self) -> list[BaseRoute]:
        return []
