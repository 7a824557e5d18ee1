"""The operator's pages: dead letters (read, replay), consumer lag and service health."""

from __future__ import annotations

from starlette.routing import BaseRoute

from services.console.web import ConsolePages


class OperatorPages:
    def __init__(self, pages: ConsolePages) -> None:
        self.pages = pages

    def routes(self) -> list[BaseRoute]:
        return []
