"""``m6gen serve`` over HTTP on a tiny random Llama: bad input, micro-batching, faults, the API key, SIGTERM.

The app is built with ``create_app`` around an in-memory recommender (serve_helpers.py); the
concurrency and disconnect tests run it on a real uvicorn server in a thread, and the SIGTERM test
runs the real ``m6gen serve`` command in a subprocess.
"""

import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import ITEMS, item_id, live_server, load_world, write_serve_data

from m6gen.config import ConfigError
from m6gen.ranking.rerank import RerankConfig
from m6gen.serving.app import create_app
from m6gen.serving.settings import ServeArgs

ROOT = Path(__file__).resolve().parents[1]
BEAMS = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_serve_data(tmp_path_factory.mktemp("serve") / "data")


@pytest.fixture(scope="module")
def world(data_dir):
    """(recommender, dataset, split, features) shared by the module's apps (each app has its own worker)."""
    return load_world(data_dir, beams=BEAMS)


@pytest.fixture
def make_app(world):
    """A factory: ``create_app`` over the shared world with ``ServeArgs(**kw)``."""

    def make(**kw):
        return create_app(*world, ServeArgs(**kw))

    return make


@pytest.fixture
def client(make_app):
    with TestClient(make_app(max_wait_ms=1)) as c:
        yield c


def ranked(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["item_id"] for r in response.json()["items"]]


# ---------------------------------------------------------------------- bad input: 4xx JSON naming the field
TOO_LONG = [item_id(i % len(ITEMS)) for i in range(10_000)]

BAD_BODIES = [  # (raw body or JSON-able value, status, field, part of the message)
    (b'{"history": ["101"', 400, "body", "not valid JSON"),
    (b"\xff\xfe{}", 400, "body", "not UTF-8"),
    ('{"history": ["Am\xe9lie (2001)"]}'.encode("latin-1"), 400, "body", "not UTF-8"),
    (b"", 400, "body", "empty"),
    (b'{"history": ["101"], "novelty": NaN}', 400, "body", "NaN"),
    (b'{"history": ["101"], "diversity": 1e999}', 422, "diversity", "finite number"),
    (b"[" * 50_000, 400, "body", "not valid JSON"),
    ([1, 2], 422, "body", "expected a JSON object"),
    ({"history": ["101"], "k": "5"}, 422, "k", "valid integer"),
    ({"history": ["101"], "k": 2.5}, 422, "k", "valid integer"),
    ({"history": ["101"], "k": True}, 422, "k", "valid integer"),
    ({"history": ["101"], "k": 0}, 422, "k", "greater than or equal to 1"),
    ({"history": ["101"], "k": -3}, 422, "k", "greater than or equal to 1"),
    ({"history": ["101"], "k": len(ITEMS) + 1}, 422, "k", "--beams"),  # the tighter limit is named
    ({"history": ["101"], "k": 10**23}, 422, "k", "--beams"),
    ({"history": ["101"], "k": BEAMS + 1}, 422, "k", "--beams"),
    ({"history": ["101"], "diversity": 1.5e308}, 422, "diversity", "less than or equal to 1000"),
    ({"history": ["101"], "novelty": 1001}, 422, "novelty", "less than or equal to 1000"),
    ({"history": ["101"], "diversity": -0.1}, 422, "diversity", "greater than or equal to 0"),
    ({"history": ["101"], "novelty": "high"}, 422, "novelty", "valid number"),
    ({"history": ["101"], "rank_by": "random"}, 422, "rank_by", "'logprob'"),
    ({"history": ["101"], "open": "yes"}, 422, "open", "valid boolean"),
    ({"history": ["101"], "beams": 50}, 422, "beams", "unknown field"),
    ({"history": ["101"], "template": "../../etc/passwd"}, 422, "template", "unknown field"),
    ({"history": "101"}, 422, "history", "valid list"),
    ({"history": ["101", 1.5]}, 422, "history[1]", "a string or a whole number"),
    ({"history": ["101", None]}, 422, "history[1]", "a string or a whole number"),
    ({"history": ["Alein"]}, 422, "history[0]", "unknown item id or title 'Alein'"),
    ({"history": ["101", 999]}, 422, "history[1]", "unknown item id or title '999'"),
    ({"history": ["x" * 400]}, 422, "history[0]", "at most 300"),
    ({"history": []}, 422, "history", "empty"),
    ({}, 422, "history", "exactly one"),
    ({"history": ["101"], "user_id": "u1"}, 422, "history", "exactly one"),
    ({"user_id": "nobody"}, 422, "user_id", "unknown user 'nobody'"),
    ({"user_id": "9" * 5000}, 422, "user_id", "5,000 characters; a user id has at most 300"),  # not echoed back
    (b'{"user_id": ' + b"9" * 5000 + b"}", 400, "body", "a number of 5,000 digits; numbers and ids have at most"),
    (b'{"history": ["101"], "k": ' + b"1" * 400 + b"}", 400, "body", "a number of 400 digits"),
    ({"history": TOO_LONG}, 422, "history", "10,000 items; at most 1,000"),
    ({"history": ["101"], "exclude": ["Nope"]}, 422, "exclude[0]", "unknown item id or title"),
    ({"history": ["101"], "cold_only": True, "open": True}, 422, "cold_only", "not with open"),
    ({"history": ["101"], "cold_only": "yes"}, 422, "cold_only", ""),
]


@pytest.mark.parametrize(
    "body, status, field, message", BAD_BODIES, ids=[f"{i}-{case[2]}" for i, case in enumerate(BAD_BODIES)]
)
def test_each_bad_input_is_a_4xx_json_error_naming_the_field(client, body, status, field, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert error["error"].startswith(f"{field}: ") and message in error["error"]
    assert ranked(client.post("/recommend", json={"history": ["101"], "k": 3}))  # and the server goes on


def test_an_unknown_title_gets_suggestions(client):
    error = client.post("/recommend", json={"history": ["Toy Story (1995)", "godfathr"]}).json()
    assert error["field"] == "history[1]" and "The Godfather (1972)" in error["suggestions"]


def test_a_utf8_bom_is_not_part_of_the_json(client):
    body = "\ufeff" + json.dumps({"history": ["Amélie (2001)"], "k": 2})
    assert ranked(client.post("/recommend", content=body.encode("utf-8")))


def test_an_oversized_body_is_413_by_its_length_or_while_it_streams(make_app):
    with TestClient(make_app(max_body_bytes=2048)) as c:
        big = json.dumps({"history": ["101"] * 1000}).encode()
        response = c.post("/recommend", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json()["field"] == "body"
        assert "at most 2,048" in response.json()["error"]
        streamed = c.post("/recommend", content=iter([big[:1500], big[1500:]]))  # chunked: no Content-Length
        assert streamed.status_code == 413 and streamed.json()["field"] == "body"
        assert ranked(c.post("/recommend", json={"history": ["101"], "k": 2}))


def test_max_history_items_is_the_documented_limit(make_app):
    with TestClient(make_app(max_history_items=3)) as c:
        refused = c.post("/recommend", json={"history": ["101", "102", "103", "104"]})
        assert refused.status_code == 422 and refused.json()["field"] == "history"
        assert "refused, not cut" in refused.json()["error"]
        assert ranked(c.post("/recommend", json={"history": ["101", "102", "103"], "k": 2}))


@pytest.mark.parametrize(
    "path, field",
    [("/items?q=" + "a" * 201, "q"), ("/items?q=al&limit=0", "limit"), ("/items?q=al&limit=abc", "limit")],
)
def test_bad_query_parameters_are_422_naming_them(client, path, field):
    response = client.get(path)
    assert response.status_code == 422 and response.json()["field"] == field


@pytest.mark.parametrize(
    "body, field",
    [
        ({"history": ["101"]}, "item"),
        ({"history": ["101"], "item": "105", "title": "x"}, "item"),
        ({"history": ["101"], "item": "Nothing Like It"}, "item"),
        ({"history": ["101"], "title": "   "}, "title"),
        ({"history": ["101"], "title": "t" * 301}, "title"),
        ({"item": "105"}, "history"),
    ],
)
def test_bad_explain_requests_name_the_field(client, body, field):
    response = client.post("/explain", json=body)
    assert response.status_code == 422 and response.json()["field"] == field, response.text


def test_unknown_paths_and_methods_are_json_errors(client):
    assert client.get("/nowhere").status_code == 404 and "GET /nowhere" in client.get("/nowhere").json()["error"]
    assert client.get("/recommend").status_code == 405
    assert client.get("/static/../../m6gen/config.py").status_code == 404


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)
FIELDS = ["history", "user_id", "k", "diversity", "novelty", "exclude", "rank_by", "open", "other"]
REAL = st.sampled_from([item_id(0), "Alien (1979)", "aliens", "u1", 3, "logprob"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | REAL | st.lists(REAL, max_size=3), max_size=4))
def test_no_body_gets_a_500(client, body):
    response = client.post("/recommend", json=body)
    assert response.status_code < 500, response.text
    assert response.status_code == 200 or set(response.json()) >= {"error", "field"}


# ---------------------------------------------------------------------- what /recommend returns
def test_results_are_the_libraries_recommend_for_ids_titles_and_users(client, world):
    rec, ds, split, _ = world
    history = [0, 2, 5]
    for diversity, novelty in ((0.0, 0.0), (0.5, 0.0), (0.0, 1.0)):
        expected = rec.recommend([history], RerankConfig(k=4, diversity=diversity, novelty=novelty))[0]
        by_id = client.post(
            "/recommend",
            json={"history": [item_id(i) for i in history], "k": 4, "diversity": diversity, "novelty": novelty},
        )
        assert ranked(by_id) == [ds.catalog[r.item_id].item_id for r in expected.items]
        for got, want in zip(by_id.json()["items"], expected.items):
            assert got["title"] == ds.catalog[want.item_id].title and got["in_catalog"]
            for name in ("score", "accuracy", "diversity", "novelty", "logprob"):
                assert math.isclose(got[name], getattr(want, name), rel_tol=1e-6, abs_tol=1e-9), name
        by_title = client.post(
            "/recommend",
            json={
                "history": [ds.catalog[i].title for i in history],
                "k": 4,
                "diversity": diversity,
                "novelty": novelty,
            },
        )
        assert ranked(by_title) == ranked(by_id)
    user = client.post("/recommend", json={"user_id": "u1", "k": 3})
    full = split.test_history("u1") + [split.test["u1"]]
    assert ranked(user) == ranked(client.post("/recommend", json={"history": [item_id(i) for i in full], "k": 3}))
    assert user.json()["history_size"] == len(full)


def test_history_and_excluded_items_are_never_recommended(client):
    history = [item_id(i) for i in (0, 1, 2)]
    first = ranked(client.post("/recommend", json={"history": history, "k": 5}))
    assert not set(first) & set(history)
    again = client.post("/recommend", json={"history": history, "k": 5, "exclude": first[:2]})
    assert not set(ranked(again)) & set(first[:2] + history) and again.json()["filled"]


def test_cold_only_names_only_the_items_no_training_interaction_names(client, world, make_app):
    from m6gen.data import cold_items

    _, ds, split, features = world
    cold = {item_id(int(i)) for i in cold_items(split, len(ds.catalog))}
    assert len(cold) == 2  # the serve world's items 4 and 10
    history = [item_id(i) for i in (0, 1, 2)]
    shelf = client.post("/recommend", json={"history": history, "k": 2, "cold_only": True})
    assert set(ranked(shelf)) == cold and shelf.json()["filled"]
    assert set(ranked(client.post("/recommend", json={"history": history, "k": 5}))) - cold  # the usual list
    with TestClient(create_app(world[0], ds, None, features, ServeArgs(max_wait_ms=1))) as no_users:
        error = no_users.post("/recommend", json={"history": history, "cold_only": True})
        assert error.status_code == 422 and error.json()["field"] == "cold_only"


def test_moving_a_slider_reranks_the_cached_beams_without_the_model(make_app):
    app = make_app(max_wait_ms=1)
    engine = app.state.service.engine
    with TestClient(app) as c:
        plain = ranked(c.post("/recommend", json={"history": ["101", "103"], "k": 5}))
        calls = engine.model_calls
        novel = ranked(c.post("/recommend", json={"history": ["101", "103"], "k": 5, "novelty": 1.0}))
        assert engine.model_calls == calls and novel != plain
        ranked(c.post("/recommend", json={"history": ["101", "104"], "k": 5}))
        assert engine.model_calls == calls + 1


def test_open_mode_flags_titles_outside_the_catalog(client, world):
    catalog = world[1].catalog
    items = client.post("/recommend", json={"history": ["101", "103"], "k": 5, "open": True}).json()["items"]
    assert items and any(not r["in_catalog"] for r in items)  # a random model names no real title
    for r in items:
        assert r["in_catalog"] == (r["item_id"] is not None) and r["accuracy"] is None
        if r["in_catalog"]:
            assert catalog.by_id(r["item_id"]).title == r["title"]


def test_explain_is_chats_why(client, world):
    from m6gen.explain import explain

    rec, ds, _, _ = world
    got = client.post("/explain", json={"history": ["101", "Alien (1979)"], "item": "106"})
    assert got.status_code == 200, got.text
    want = explain(rec.model, rec.tokenizer, [ds.catalog[0].title, ds.catalog[2].title], ds.catalog[5].title)
    assert got.json() == {"title": ds.catalog[5].title, "explanation": want}


def test_items_matches_prefixes_and_typos_ignoring_case(client):
    def titles(q, **kw):
        return [r["title"] for r in client.get("/items", params={"q": q, **kw}).json()["items"]]

    assert titles("toy st") == ["Toy Story (1995)"]
    assert titles("ALIEN") == ["Alien (1979)"]
    assert set(titles("ali")) == {"Alien (1979)", "Aliens (1986)", "Alien 3 (1992)"}
    assert titles("ali", limit=2) == titles("ali")[:2]
    assert titles("godfathr part")[0] == "The Godfather: Part II (1974)"  # a typo: fuzzy, best first
    assert titles("amelie") == ["Amélie (2001)"]
    assert titles("") == [] and titles("zzzzqqq") == []


def test_info_health_docs_and_page(client):
    info = client.get("/info").json()
    assert (info["catalog_size"], info["template"], info["beams"]) == (len(ITEMS), "titles", BEAMS)
    assert info["serving"]["api_key"] is False and info["dtype"] == "float32"
    assert client.get("/health").json()["status"] == "ok"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # Swagger UI from the app: works offline
    script = next(line for line in docs.text.splitlines() if "swagger-ui-bundle.js" in line).split('"')[1]
    assert client.get(script).status_code == 200
    schema = client.get("/openapi.json").json()["paths"]["/recommend"]["post"]["requestBody"]
    assert "history" in schema["content"]["application/json"]["schema"]["properties"]
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.head("/").status_code == 200 and client.head("/health").status_code == 200  # uptime checkers


def test_the_page_loads_nothing_from_elsewhere():
    static = ROOT / "m6gen" / "serving" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name


# ---------------------------------------------------------------------- micro-batching and faults
def post_all(base: str, bodies: list[dict], path: str = "/recommend") -> list[httpx.Response]:
    """Every body POSTed at once, one client thread each."""
    out: list = [None] * len(bodies)

    def one(i):
        with httpx.Client(timeout=60) as c:
            out[i] = c.post(base + path, json=bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return out


USER_BODIES = [{"user_id": f"u{u}", "k": 4, "novelty": 0.3 * (u % 2)} for u in range(8)]


def same_lists(got: list[httpx.Response], want: list[httpx.Response]) -> None:
    """Same items in the same order; scores equal up to batched-padding round-off."""
    for g, w in zip(got, want):
        assert ranked(g) == ranked(w)
        for a, b in zip(g.json()["items"], w.json()["items"]):
            assert math.isclose(a["logprob"], b["logprob"], rel_tol=1e-4, abs_tol=1e-4)


def test_concurrent_requests_share_model_calls_and_match_one_at_a_time(make_app):
    batched_app = make_app(max_batch=8, max_wait_ms=500)
    with live_server(batched_app) as base:
        batched = post_all(base, USER_BODIES)
    stats, engine = batched_app.state.service.batcher.stats, batched_app.state.service.engine
    assert engine.model_calls < len(USER_BODIES) and stats.largest > 1, (engine.model_calls, list(stats.sizes))
    single_app = make_app(max_batch=1, max_wait_ms=0)
    with TestClient(single_app) as c:
        alone = [c.post("/recommend", json=body) for body in USER_BODIES]
    assert single_app.state.service.engine.model_calls == len(USER_BODIES)
    same_lists(batched, alone)


@pytest.fixture(scope="module")
def short_context_world(data_dir):
    """A world whose model's context fits a prompt of one or two titles but not of twelve."""
    from tiny_lm import make_model, make_tokenizer

    from m6gen.model import encode_prompts

    rec, ds, split, features = load_world(data_dir, beams=BEAMS, model=make_model(len(make_tokenizer())))
    short, long = (len(encode_prompts(rec.tokenizer, rec.prompts([h]))[0]) for h in ([0, 2], list(range(12))))
    rec.model.config.max_position_embeddings = (short + long) // 2 + rec.trie.max_depth
    return rec, ds, split, features


def test_one_bad_request_in_a_batch_fails_alone(short_context_world):
    app = create_app(*short_context_world, ServeArgs(max_batch=4, max_wait_ms=3000))  # runs once all 4 are in
    good = [{"history": [item_id(a), item_id(b)], "k": 3} for a, b in ((0, 2), (1, 3), (4, 5))]
    bad = {"history": [item_id(i) for i in range(12)], "k": 3}
    with live_server(app) as base:
        responses = post_all(base, good[:2] + [bad] + good[2:])
        alone = [httpx.post(base + "/recommend", json=body, timeout=60) for body in good]
    assert responses[2].status_code == 422 and responses[2].json()["field"] == "history"
    assert "context" in responses[2].json()["error"]
    same_lists(responses[:2] + responses[3:], alone)
    assert app.state.service.batcher.stats.retried >= 1  # they did share a batch, which failed as a whole


def test_an_open_prompt_past_the_context_is_a_422_too(short_context_world):
    """Open mode checks the prompt's length as catalog mode does, instead of generating past the context."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(*short_context_world, ServeArgs())) as c:
        bad = c.post("/recommend", json={"history": [item_id(i) for i in range(12)], "k": 3, "open": True})
        assert bad.status_code == 422 and bad.json()["field"] == "history" and "context" in bad.json()["error"]
        assert c.post("/recommend", json={"history": [item_id(0), item_id(2)], "k": 3, "open": True}).status_code == 200


def raw_request(base: str, body: dict) -> socket.socket:
    """A POST sent on a bare socket, left open: closing it is a client disconnecting mid-request."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /recommend HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_that_disconnects_does_not_break_its_batch(make_app, world):
    rec = world[0]
    started = threading.Event()

    def slow_forward(*_):  # a model step that takes a while, and says when the batch is on the model
        started.set()
        time.sleep(0.02)

    hook = rec.model.register_forward_pre_hook(slow_forward)
    try:
        app = make_app(max_batch=4, max_wait_ms=2000)
        batcher = app.state.service.batcher
        with live_server(app) as base:
            # 1. gone while its batch is still gathering: dropped, the others answered
            results: queue.Queue = queue.Queue()
            for body in USER_BODIES[:2]:
                threading.Thread(target=lambda b=body: results.put(post_all(base, [b])[0])).start()
            leaver = raw_request(base, USER_BODIES[2])
            wait_until(lambda: batcher.pending == 3)
            leaver.close()
            answered = [results.get(timeout=60) for _ in range(2)]
            assert all(r.status_code == 200 for r in answered) and batcher.stats.dropped == 1
            # 2. gone while its batch runs on the model: the batch finishes, its mates get their lists
            started.clear()
            for body in USER_BODIES[3:5]:
                threading.Thread(target=lambda b=body: results.put(post_all(base, [b])[0])).start()
            leaver = raw_request(base, USER_BODIES[5])
            assert started.wait(60)
            leaver.close()
            answered += [results.get(timeout=60) for _ in range(2)]
            after = httpx.post(base + "/recommend", json=USER_BODIES[6], timeout=60)
        assert all(r.status_code == 200 and len(r.json()["items"]) == 4 for r in answered + [after])
    finally:
        hook.remove()


# ---------------------------------------------------------------------- access
KEY = "s3cret-key-for-tests"


def test_the_api_key_is_required_everywhere_but_health(make_app, monkeypatch):
    import base64
    import hmac

    import m6gen.serving.app as app_module

    compared, real = [], hmac.compare_digest
    monkeypatch.setattr(app_module.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with TestClient(make_app(api_key=KEY)) as c:
        assert c.get("/health").status_code == 200
        for method, path in (
            ("get", "/info"),
            ("get", "/items?q=al"),
            ("post", "/recommend"),
            ("post", "/explain"),
            ("get", "/"),
            ("get", "/docs"),
            ("get", "/openapi.json"),
            ("get", "/static/app.js"),
        ):
            response = getattr(c, method)(path)
            assert response.status_code == 401, path
            assert response.json()["field"] == "authorization" and "WWW-Authenticate" in response.headers
            assert "API key required" in response.json()["error"]
        wrong = {"X-API-Key": KEY[:-1] + "x"}
        assert c.get("/info", headers=wrong).status_code == 401
        assert "wrong API key" in c.get("/info", headers=wrong).json()["error"]
        basic = "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": basic}):
            assert c.get("/info", headers=headers).status_code == 200, headers
        body = {"history": ["101"], "k": 2}
        assert ranked(c.post("/recommend", json=body, headers={"X-API-Key": KEY}))
        assert KEY not in c.get("/info", headers={"X-API-Key": KEY}).text
    assert compared  # constant-time comparison, not ==


def test_the_key_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.setenv("M6GEN_API_KEY", KEY)
    assert ServeArgs().api_key == KEY and ServeArgs(api_key="another-key").api_key == "another-key"
    monkeypatch.delenv("M6GEN_API_KEY")
    assert ServeArgs().api_key is None and ServeArgs().host == "127.0.0.1"


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"max_wait_ms": 60_000}, "max_wait_ms"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"host": " "}, "host"),
        ({"max_history_items": 0}, "max_history_items"),
        ({"api_key": "short"}, "api_key"),
        ({"api_key": "has a space"}, "api_key"),
    ],
)
def test_serving_options_are_checked_naming_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        ServeArgs(**kw)


# ---------------------------------------------------------------------- the real command
def read_lines(stream, into: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        into.put(line)


def test_sigterm_finishes_the_request_in_flight_then_exits_0(data_dir, tmp_path):
    from helpers import save_tiny_model

    model = save_tiny_model(tmp_path / "model")
    cmd = [
        sys.executable,
        "-m",
        "m6gen",
        "serve",
        "--model",
        str(model),
        "--data",
        str(data_dir),
        "--port",
        "0",
        "--beams",
        str(BEAMS),
        "--k",
        "5",
        "--max-wait-ms",
        "3000",
        "--no-progress",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "M6GEN_API_KEY": ""},
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        seen = []
        while not any("m6gen serve: http://" in line for line in seen):
            seen.append(lines.get(timeout=180))
        base = seen[-1].split()[2].rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        wait_until(lambda: _health(base) is not None, timeout=120)
        info = httpx.get(base + "/info", timeout=5).json()
        assert info["serving"]["port"] == int(base.rsplit(":", 1)[1])  # --port 0: the one it took
        answer: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: answer.put(post_all(base, [{"user_id": "u2", "k": 5}])[0])).start()
        wait_until(lambda: (_health(base) or {}).get("queued") == 1)  # in flight: waiting for batch mates
        proc.send_signal(signal.SIGTERM)
        response = answer.get(timeout=60)
        assert response.status_code == 200 and len(response.json()["items"]) == 5
        assert proc.wait(timeout=60) == 0
        reader.join(10)
        assert "m6gen serve: stopped" in "".join(seen + list(lines.queue))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _health(base: str) -> dict | None:
    try:
        return httpx.get(base + "/health", timeout=5).json()
    except httpx.HTTPError:
        return None


def test_a_busy_port_is_a_one_line_error_before_the_model_loads(data_dir, capsys):
    from m6gen.commands.serve import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        assert main(["--data", str(data_dir), "--model", "/nonexistent/model", "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there") and "\n" not in err
