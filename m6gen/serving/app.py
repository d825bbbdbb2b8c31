"""The HTTP API and the page: ``create_app`` wires a loaded recommender to FastAPI routes.

    app = create_app(recommender, dataset, split, features, ServeArgs())   # tests pass a tiny recommender
    uvicorn.run(app)                                                        # `m6gen serve` does this

Every bad input is a 4xx JSON reply ``{"error": ..., "field": ...}`` (:class:`ApiError`), checked
before it reaches the model worker. Model work (beams, open mode, explanations) goes through one
:class:`MicroBatcher`; the event loop only parses, checks and waits, so it stays responsive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from m6gen.data.catalog import normalize_text
from m6gen.data.titles import TitleMatcher
from m6gen.serving import schemas
from m6gen.serving.batcher import BatcherClosed, MicroBatcher
from m6gen.serving.engine import Engine
from m6gen.serving.errors import ApiError
from m6gen.serving.inputs import Inputs, parse_json, read_body, validation_error
from m6gen.serving.settings import ServeArgs

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/health",)  # the only path served without the API key


@dataclass
class Service:
    """What the routes share: the checks, the batcher, the engine and what /info reports."""

    inputs: Inputs
    batcher: MicroBatcher
    engine: Engine
    matcher: TitleMatcher
    catalog: Any
    settings: ServeArgs
    info: dict


def create_app(recommender, dataset, split, features, settings: ServeArgs, *, options: dict | None = None) -> FastAPI:
    """The app over a loaded ``recommender`` and its data; the model worker thread starts now.

    Args:
        recommender: a :class:`~m6gen.recommender.Recommender` over ``dataset.catalog``.
        dataset: the loaded data (its catalog and user profiles).
        split: its leave-one-out split, for ``user_id`` requests (None: no users).
        features: item genres and popularity for diversity and novelty (None: the recommender's own).
        settings: the serving options.
        options: the command's resolved options, shown by /info; their k, diversity and novelty are the
            defaults of a request that leaves them out.
    """
    if features is not None:
        recommender.features = features
    service = _service(recommender, dataset, split, settings, options or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(service.batcher.close)  # after uvicorn has let in-flight requests finish

    app = FastAPIOffline(  # FastAPI whose /docs loads Swagger UI from the app, not a CDN: users may be offline
        redoc_url=None,
        title="m6gen",
        summary="Recommendations by constrained generation of item titles",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key)
    return app


def _service(recommender, dataset, split, settings: ServeArgs, options: dict) -> Service:
    cfg = recommender.config
    max_batch = settings.max_batch or cfg.batch_size
    engine = Engine(recommender, batch_size=max_batch)
    batcher = MicroBatcher(engine.run_batch, max_batch, settings.max_wait_ms)
    defaults = {
        "k": options.get("k", min(10, cfg.beams)),
        "diversity": options.get("diversity", 0.0),
        "novelty": options.get("novelty", 0.0),
        "rank_by": cfg.rank_by,
    }
    matcher = TitleMatcher(dataset.catalog.titles)
    inputs = Inputs(
        dataset.catalog,
        split,
        getattr(dataset, "profiles", None),
        matcher,
        defaults,
        beams=cfg.beams,
        max_items=settings.max_history_items,
    )
    info = _info(recommender, dataset, split, settings, options, defaults, max_batch)
    return Service(inputs, batcher, engine, matcher, dataset.catalog, settings, info)


def _info(recommender, dataset, split, settings: ServeArgs, options: dict, defaults: dict, max_batch: int) -> dict:
    """What GET /info reports; never the API key."""
    param = next(iter(recommender.model.parameters()), None)
    if "model" in options:  # the command's --model: None is the default model
        model_name = options["model"] or "default (SmolLM2-135M-Instruct)"
    else:
        model_name = getattr(getattr(recommender.model, "config", None), "name_or_path", "") or "(in memory)"
    return {
        "model": model_name,
        "template": recommender.template.name,
        "catalog_size": len(dataset.catalog),
        "users": len(split.users) if split is not None else 0,
        "device": str(param.device) if param is not None else "cpu",
        "dtype": str(param.dtype).removeprefix("torch.") if param is not None else "unknown",
        "beams": recommender.config.beams,
        "max_history": recommender.config.max_history,
        "defaults": defaults,
        "serving": {**settings.public(), "max_batch": max_batch},
        "options": {k: v for k, v in options.items() if k != "api_key"},
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("m6gen")
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------- routes
ERRORS = {code: {"model": schemas.ErrorResponse} for code in (400, 401, 413, 422, 503)}


def _body_doc(schema: type) -> dict:
    """The request body as the docs show it (the routes read and check the body themselves)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema.model_json_schema()}}}}


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: what uptime checkers send
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.head("/health", include_in_schema=False)  # what uptime checkers send; one schema entry, GET's
    @app.get("/health", summary="Liveness: 200 while the server runs (no API key needed)")
    def health() -> dict:
        return {"status": "ok", "queued": service.batcher.pending}

    @app.get("/info", summary="Model, template, catalog size and configuration", responses=ERRORS)
    def info() -> dict:
        stats = service.batcher.stats
        batches = {
            "batches": stats.batches,
            "requests": stats.jobs,
            "largest": stats.largest,
            "dropped": stats.dropped,
            "model_calls": service.engine.model_calls,
        }
        return {**service.info, "stats": batches}

    @app.get(
        "/items",
        response_model=schemas.ItemsResponse,
        responses=ERRORS,
        summary="Catalog titles matching what was typed: prefix, then fuzzy (case and accents ignored)",
    )
    def items(
        q: str = Query("", max_length=200, description="typed text, e.g. 'toy st'"),
        limit: int = Query(10, ge=1, le=50, description="most items returned"),
    ) -> dict:
        text = normalize_text(q)
        how, found = service.matcher.match(text, limit=limit) if text else ("none", [])
        cat = service.catalog
        return {
            "query": q,
            "how": how,
            "items": [{"item_id": cat[i].item_id, "title": cat[i].title} for i in found[:limit]],
        }

    @app.post(
        "/recommend",
        response_model=schemas.RecommendResponse,
        responses=ERRORS,
        openapi_extra=_body_doc(schemas.RecommendRequest),
        summary="Top-k for a history (item ids or titles) or a user of the loaded data",
    )
    async def recommend(request: Request) -> Any:
        req = parse_json(await read_body(request, service.settings.max_body_bytes), schemas.RecommendRequest)
        job = await run_in_threadpool(service.inputs.recommend_job, req)  # fuzzy title suggestions take a while
        result = await run_job(request, service.batcher, job)
        if isinstance(result, Response):
            return result
        return {**result, "k": job.k, "open": job.open, "history_size": len(job.history)}

    @app.post(
        "/explain",
        response_model=schemas.ExplainResponse,
        responses=ERRORS,
        openapi_extra=_body_doc(schemas.ExplainRequest),
        summary="Why an item suits a history, in the model's words (chat's `why`)",
    )
    async def explain(request: Request) -> Any:
        req = parse_json(await read_body(request, service.settings.max_body_bytes), schemas.ExplainRequest)
        return await run_job(request, service.batcher, await run_in_threadpool(service.inputs.explain_job, req))


async def run_job(request: Request, batcher: MicroBatcher, job) -> Any:
    """The job's result from the model worker; a client that goes away first cancels its job, no one else's."""
    try:
        waiting = asyncio.wrap_future(batcher.submit(job.key, job))
    except BatcherClosed:
        raise ApiError(503, None, "the server is shutting down; try again shortly") from None
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        waiting.cancel()
        raise
    finally:
        gone.cancel()
    if waiting not in done:
        waiting.cancel()  # not started yet: the worker drops it; running: its result is thrown away
        return Response(status_code=499)  # nginx's "client closed request"; no one reads it
    return waiting.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------------- errors and the key
def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="m6gen"'} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_query(_request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [
            {**e, "loc": tuple(e["loc"])[1:] if e["loc"][:1] in (("query",), ("path",)) else e["loc"]}
            for e in err.errors()
        ]
        found = validation_error(errors)
        return JSONResponse(found.body(), status_code=found.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        message = f"{err.detail}: {request.method} {request.url.path}" if err.status_code in (404, 405) else err.detail
        return JSONResponse({"error": message, "field": None}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_request: Request, _err: ClientDisconnect) -> Response:
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def internal(_request: Request, err: Exception) -> JSONResponse:  # uvicorn logs the traceback
        return JSONResponse(
            {"error": f"internal error ({type(err).__name__}); the server log has the traceback", "field": None},
            status_code=500,
        )


class ApiKeyMiddleware:
    """Every path but /health needs the key: ``X-API-Key: KEY``, ``Authorization: Bearer KEY`` or Basic with
    password KEY (what a browser sends after its login prompt, so the page works too). Compared in constant time."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode("latin-1")

    async def __call__(self, scope, receive, send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or scope["path"] in OPEN_PATHS or self.allows(headers):
            await self.app(scope, receive, send)
            return
        what = "wrong API key" if _offered_keys(headers) else "API key required"
        err = ApiError(401, "authorization", f"{what}: send X-API-Key: KEY or Authorization: Bearer KEY")
        response = JSONResponse(err.body(), status_code=401, headers={"WWW-Authenticate": 'Basic realm="m6gen"'})
        await response(scope, receive, send)

    def allows(self, headers: Headers) -> bool:
        ok = False
        for given in _offered_keys(headers):  # every candidate compared, so timing says nothing about which
            ok |= hmac.compare_digest(given.encode("latin-1"), self.key)
        return ok


def _offered_keys(headers: Headers) -> list[str]:
    keys = headers.getlist("x-api-key")
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        keys.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            keys.append(base64.b64decode(value.strip(), validate=True).decode("latin-1").partition(":")[2])
        except (binascii.Error, ValueError):
            pass
    return keys
