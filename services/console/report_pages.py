"""Reports for everyone with a role: the timeliness report and its chart."""

from __future__ import annotations

from starlette.routing import BaseRoute

from services.console.web import ConsolePages


class ReportPages:
    def __init__(self, pages: ConsolePages) -> None:
        self.pages = pages

    def routes(self) -> list[BaseRoute]:
        return []
