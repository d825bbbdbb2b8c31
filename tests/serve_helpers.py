"""A tiny served world for the serving tests: 12 titles with genres, 8 users, a tiny random Llama."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# (title, year, genres): short titles the tiny tokenizer knows (tiny_lm.CORPUS), so prompts stay short.
ITEMS = [
    ("Toy Story", 1995, ["Animation", "Comedy"]),
    ("Toy Soldiers", 1991, ["Action"]),
    ("Alien", 1979, ["Horror", "SciFi"]),
    ("Aliens", 1986, ["Action", "SciFi"]),
    ("Alien 3", 1992, ["SciFi"]),
    ("The Godfather", 1972, ["Crime", "Drama"]),
    ("The Godfather: Part II", 1974, ["Crime", "Drama"]),
    ("Heat", 1995, ["Crime", "Action"]),
    ("Casino", 1995, ["Crime"]),
    ("Amélie", 2001, ["Comedy", "Romance"]),
    ("Crouching Tiger, Hidden Dragon", 2000, ["Action", "Romance"]),
    ("Fargo", 1996, ["Crime", "Comedy"]),
]
N_USERS = 8


def item_id(i: int) -> str:
    """Data ids that are not catalog positions (id 101 is item 0), so a mix-up shows."""
    return str(101 + i)


def write_serve_data(folder: Path) -> Path:
    """items.jsonl (ids 101..112) and interactions.csv: user u{n} watched 5 items, popular ones more often."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"item_id": item_id(i), "title": t, "year": y, "genres": g}) for i, (t, y, g) in enumerate(ITEMS)
    ]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["user_id,item_id,timestamp"]
    for u in range(N_USERS):
        for step in range(5):
            rows.append(f"u{u},{item_id((u * 3 + step * (1 + u % 2)) % len(ITEMS))},{step}")
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def load_world(data: Path, beams: int = 8, model=None, seed: int = 0):
    """(recommender, dataset, split, features) over the data in ``data`` with a tiny random Llama (or ``model``)."""
    from tiny_lm import make_model, make_tokenizer

    from m6gen.data import build_histories, item_popularity, leave_one_out, load_dataset
    from m6gen.prompts import TemplateLibrary
    from m6gen.ranking.rerank import ItemFeatures
    from m6gen.recommender import RecommendConfig, Recommender

    ds = load_dataset(data)
    split = leave_one_out(build_histories(ds))
    tok = make_tokenizer()
    lm = model if model is not None else make_model(len(tok), seed=seed)
    features = ItemFeatures.from_genres(
        [list(it.genres) for it in ds.catalog], popularity=item_popularity(split, len(ds.catalog))
    )
    rec = Recommender(
        lm,
        tok,
        ds.catalog,
        TemplateLibrary().get("titles"),
        RecommendConfig(beams=beams, batch_size=4),
        features=features,
    )
    return rec, ds, split, features


@contextmanager
def live_server(app) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free 127.0.0.1 port, in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
