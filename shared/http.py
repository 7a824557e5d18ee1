"""Each service's small HTTP server: /metrics and /healthz, plus any routes the service adds.

/metrics serves the process's registry; while several services' servers are up in one process (`ppo-alerts
demo`, `run all`), each serves only its own service's series (shared/metrics.py ServiceView), so scraping every
port counts everything once. A process per service serves exactly what it did before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared.consumer_watch import WATCH
from shared.metrics import ServiceView

_UP: list[str] = []  # the services whose HTTP server is up in this process, in start order (a name per server)


def services_up() -> list[str]:
    """The distinct services with a server up in this process; the first also serves process-wide series."""
    return list(dict.fromkeys(_UP))


def build_app(service: str, healthy: Callable[[], bool], routes: Sequence[BaseRoute] = ()) -> Starlette:
    async def metrics(_: Request) -> Response:
        together = services_up()
        if len(together) > 1 and service in together:
            return Response(generate_latest(ServiceView(service, together)), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        if stuck := [s.as_dict() for s in WATCH.stuck() if s.service == service]:
            return JSONResponse({"service": service, "status": "stuck", "stuck": stuck}, status_code=503)
        ok = healthy()
        return JSONResponse({"service": service, "status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    app = Starlette(routes=[*routes, Route("/metrics", metrics), Route("/healthz", healthz)])
    app.state.service = service
    return app


class HttpServer:
    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign,attr-defined]
        self._task: asyncio.Task[None] | None = None
        self._service: str | None = getattr(app.state, "service", None)  # set by build_app
        self._up = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
            await asyncio.sleep(0.02)
        if self._service is not None and not self._up:
            _UP.append(self._service)
            self._up = True

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._up and self._service is not None:
            _UP.remove(self._service)
            self._up = False
        self.server.should_exit = True
        if self._task is not None:
            await self._task
