"""Throughput and latency of ``m6gen serve`` under concurrent clients: micro-batched against one request at a time.

    .venv/bin/python scripts/bench_serve.py                          # default model and data, 16 clients, 48 requests
    .venv/bin/python scripts/bench_serve.py --tiny --requests 200    # a tiny random model: seconds, for the plumbing
    .venv/bin/python scripts/bench_serve.py --model runs/seq --clients 8 --max-batch 8 --requests 32

Starts the real server twice on 127.0.0.1 (a free port each time), with ``--max-batch`` N and with
``--max-batch 1``, on the same model, data and options. Each time it sends a few warm-up requests,
then N client threads send ``--requests`` POST /recommend requests in all (one user of the data
each, by ``user_id``), and the server is stopped with SIGTERM. Traffic goes to 127.0.0.1 only, and
each run stops by itself after ``--requests`` requests or ``--timeout-s`` seconds. Prints one table:
throughput, p50/p95/p99 latency, the model's batches, with the CPU, torch threads and dtype.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, by design: this script never sends traffic elsewhere


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="run folder, HF id/folder or .gguf (default: the default model)")
    p.add_argument("--tiny", action="store_true", help="a tiny random Llama instead (tests/tiny_lm.py)")
    p.add_argument("--data", default=None, help="data folder (default: MovieLens-100K from setup)")
    p.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    p.add_argument("--requests", type=int, default=48, help="measured requests per server")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured requests first")
    p.add_argument(
        "--max-batch", type=int, default=None, help="the micro-batched server's --max-batch (default: --clients)"
    )
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: all cores)")
    p.add_argument("--timeout-s", type=float, default=1800, help="a run stops taking new requests after this")
    return p


@dataclass
class Run:
    """One server's measurement."""

    label: str
    max_batch: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]  # nearest rank

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0


# ---------------------------------------------------------------------- the server
class Server:
    """``m6gen serve`` in a subprocess on a free loopback port; its log goes to a file."""

    def __init__(self, argv: list[str], log: Path):
        self.log = log
        cmd = [sys.executable, "-m", "m6gen", "serve", "--host", HOST, "--port", "0", "--no-progress", *argv]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
        self.url: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        with self.log.open("w", encoding="utf-8") as out:
            for line in iter(self.proc.stderr.readline, ""):
                out.write(line)
                out.flush()
                if line.startswith("m6gen serve: http://"):
                    self.url.put(line.split()[2].rstrip("/"))
        self.url.put(None)

    def wait_ready(self, timeout: float = 900) -> str:
        base = self.url.get(timeout=timeout)
        if base is None:
            raise RuntimeError(f"the server did not start; its log: {self.log}\n{self.log.read_text()[-2000:]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                get_json(base + "/health", timeout=5)
                return base
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"the server never answered /health; its log: {self.log}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def get_json(url: str, body: dict | None = None, timeout: float = 600) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------- the clients
def drive(base: str, bodies: list[dict], clients: int, timeout_s: float, run: Run) -> None:
    """``clients`` threads send ``bodies`` until none is left (or ``timeout_s`` passes); latencies into ``run``."""
    todo: queue.Queue = queue.Queue()
    for body in bodies:
        todo.put(body)
    lock = threading.Lock()
    stop_at = time.monotonic() + timeout_s

    def client() -> None:
        while time.monotonic() < stop_at:
            try:
                body = todo.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                get_json(base + "/recommend", body)
                with lock:
                    run.latencies.append(time.perf_counter() - t0)
            except (urllib.error.URLError, OSError, ValueError) as err:
                with lock:
                    run.errors.append(f"{body}: {err}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall_s = time.perf_counter() - t0


def measure(label: str, max_batch: int, serve_argv: list[str], users: list[str], args, workdir: Path) -> Run:
    run = Run(label, max_batch)
    server = Server([*serve_argv, "--max-batch", str(max_batch)], workdir / f"server-{max_batch}.log")
    try:
        base = server.wait_ready()
        warm, measured = users[: args.warmup], users[args.warmup : args.warmup + args.requests]
        warm_run = Run("warm-up", max_batch)
        drive(
            base,
            [{"user_id": u, "k": args.k} for u in warm],
            min(args.clients, len(warm) or 1),
            args.timeout_s,
            warm_run,
        )
        drive(base, [{"user_id": u, "k": args.k} for u in measured], args.clients, args.timeout_s, run)
        run.info = get_json(base + "/info", timeout=30)
    finally:
        server.stop()
    return run


def tiny_model(folder: Path) -> str:
    """A tiny random Llama and the tests' tokenizer, saved where the server can load it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_lm import make_model, make_tokenizer

    tok = make_tokenizer()
    model = make_model(len(tok), hidden=64, layers=2)
    model.config.max_position_embeddings = 8192  # byte-level titles make long prompts; rotary has no table
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def report(runs: list[Run], args, model: str) -> None:
    info = runs[0].info
    threads = args.threads or "all"
    print(
        f"\nmodel {model} | dtype {info.get('dtype')} | device {info.get('device')} | CPU {cpu_name()} | "
        f"torch threads {threads}"
    )
    print(
        f"{info.get('catalog_size')} items, template {info.get('template')}, beams {args.beams}, k {args.k}, "
        f"{args.clients} clients, {args.requests} requests, max-wait-ms {args.max_wait_ms:g}\n"
    )
    print("| server | max batch | ok | errors | req/s | p50 s | p95 s | p99 s | model batches | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        stats = r.info.get("stats", {})
        batches = stats.get("batches", 0)
        mean = stats.get("requests", 0) / batches if batches else float("nan")
        print(
            f"| {r.label} | {r.max_batch} | {len(r.latencies)} | {len(r.errors)} | {r.throughput:.2f} | "
            f"{r.percentile(50):.2f} | {r.percentile(95):.2f} | {r.percentile(99):.2f} | {batches} | {mean:.1f} |"
        )
    if runs[1].throughput:
        print(
            f"\nmicro-batched / one at a time: {runs[0].throughput / runs[1].throughput:.2f}x throughput (target >= 4x)"
        )
    for r in runs:
        for e in r.errors[:3]:
            print(f"error ({r.label}): {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from m6gen.data import build_histories, leave_one_out, load_dataset

    users = leave_one_out(build_histories(load_dataset(args.data))).users
    if len(users) < args.warmup + args.requests:
        print(f"error: the data has {len(users)} users, fewer than --warmup + --requests", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        workdir = Path(tmp)
        model = tiny_model(workdir / "tiny") if args.tiny else args.model
        serve_argv = [
            "--beams",
            str(args.beams),
            "--k",
            str(args.k),
            "--dtype",
            args.dtype,
            "--max-wait-ms",
            str(args.max_wait_ms),
        ]
        serve_argv += ["--model", model] if model else []
        serve_argv += ["--data", args.data] if args.data else []
        serve_argv += ["--threads", str(args.threads)] if args.threads else []
        max_batch = args.max_batch or args.clients
        runs = [
            measure("micro-batched", max_batch, serve_argv, users, args, workdir),
            measure("one at a time", 1, serve_argv, users, args, workdir),
        ]
        report(runs, args, "tiny random Llama" if args.tiny else (args.model or "default (SmolLM2-135M-Instruct GGUF)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
