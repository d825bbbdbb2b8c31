"""``m6gen serve``: recommendations over HTTP, micro-batched onto one model worker, with a web page at ``/``.

    settings.py   the serving options (``ServeArgs``)
    errors.py     the one error type every bad input becomes: a 4xx JSON reply naming the field
    schemas.py    request and response bodies (pydantic; they make the OpenAPI docs at /docs)
    inputs.py     request body -> checked job: size, UTF-8, JSON, types, titles and ids, k
    batcher.py    concurrent requests gathered into batches run by one worker thread
    engine.py     what that worker runs: constrained beams, reranking, open mode, explanations
    app.py        the FastAPI app (``create_app``), its routes and the API key check
    static/       the page: plain HTML, CSS and JavaScript, no build step, no CDN

Nothing here is imported by ``m6gen serve --help``; FastAPI loads only when the server starts.
"""
