"""The micro-batcher on its own (no model, no HTTP): gathering, keys, isolation of a bad job, cancellation, shutdown."""

import threading
import time

import pytest

from m6gen.serving.batcher import BatcherClosed, MicroBatcher


class Recorder:
    """A run_batch that records each batch and the thread it ran on; payload "bad" fails its whole batch."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[tuple] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.running = threading.Event()

    def __call__(self, key, payloads):
        self.running.set()
        self.threads.add(threading.current_thread().name)
        self.batches.append((key, list(payloads)))
        time.sleep(self.delay)
        if "bad" in payloads:
            raise ValueError("bad payload")
        return [f"{key}:{p}" for p in payloads]


def submit_all(batcher, items):
    return [batcher.submit(key, payload) for key, payload in items]


def test_jobs_queued_together_run_as_one_batch_on_one_worker_thread():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, max_wait_ms=300)
    futures = submit_all(batcher, [("a", i) for i in range(5)])
    assert [f.result(5) for f in futures] == [f"a:{i}" for i in range(5)]
    assert [len(p) for _, p in run.batches] == [5]
    assert run.threads == {"m6gen-model"} and threading.current_thread().name not in run.threads
    batcher.close()


def test_max_batch_bounds_a_batch_and_max_wait_bounds_the_wait():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=3, max_wait_ms=50)
    futures = submit_all(batcher, [("a", i) for i in range(7)])
    assert [f.result(5) for f in futures] == [f"a:{i}" for i in range(7)]
    assert [len(p) for _, p in run.batches] == [3, 3, 1]
    t0 = time.monotonic()
    assert batcher.submit("a", "alone").result(5) == "a:alone"  # runs after max_wait_ms, not never
    assert time.monotonic() - t0 < 2
    batcher.close()


def test_one_at_a_time_runs_every_job_alone():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=1, max_wait_ms=50)
    assert [f.result(5) for f in submit_all(batcher, [("a", i) for i in range(4)])] == [f"a:{i}" for i in range(4)]
    assert [len(p) for _, p in run.batches] == [1, 1, 1, 1]
    batcher.close()


def test_jobs_of_another_key_wait_for_their_own_batch():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, max_wait_ms=200)
    futures = submit_all(batcher, [("a", 1), ("b", 2), ("a", 3), ("b", 4)])
    assert [f.result(5) for f in futures] == ["a:1", "b:2", "a:3", "b:4"]
    assert sorted((k, p) for k, p in run.batches) == [("a", [1, 3]), ("b", [2, 4])]
    batcher.close()


def test_a_bad_job_fails_alone_and_its_batch_mates_get_their_results():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, max_wait_ms=300)
    futures = submit_all(batcher, [("a", 1), ("a", "bad"), ("a", 3)])
    assert futures[0].result(5) == "a:1" and futures[2].result(5) == "a:3"
    with pytest.raises(ValueError, match="bad payload"):
        futures[1].result(5)
    assert [p for _, p in run.batches] == [[1, "bad", 3], [1], ["bad"], [3]]  # one batch, then each job alone
    assert batcher.stats.retried == 1
    assert batcher.submit("a", 9).result(5) == "a:9"  # the worker goes on
    batcher.close()


def test_an_exception_returned_for_one_job_fails_only_that_job():
    def run(key, payloads):
        return [KeyError(p) if p == "gone" else p for p in payloads]

    batcher = MicroBatcher(run, max_batch=4, max_wait_ms=200)
    ok, bad = batcher.submit("a", "x"), batcher.submit("a", "gone")
    assert ok.result(5) == "x"
    with pytest.raises(KeyError):
        bad.result(5)
    batcher.close()


def test_a_cancelled_job_is_dropped_and_a_running_ones_result_is_discarded_safely():
    run = Recorder(delay=0.3)
    batcher = MicroBatcher(run, max_batch=8, max_wait_ms=400)
    keep, gone = batcher.submit("a", 1), batcher.submit("a", 2)
    assert gone.cancel()  # its client left while it waited in the queue
    assert keep.result(5) == "a:1"
    assert run.batches == [("a", [1])] and batcher.stats.dropped == 1
    run.running.clear()
    running = batcher.submit("a", 3)
    assert run.running.wait(5)
    assert not running.cancel()  # already in a running batch: it finishes, no one reads it
    assert running.result(5) == "a:3"
    assert batcher.submit("a", 4).result(5) == "a:4"
    batcher.close()


def test_close_finishes_queued_jobs_then_refuses_new_ones():
    run = Recorder(delay=0.05)
    batcher = MicroBatcher(run, max_batch=2, max_wait_ms=5000)
    futures = submit_all(batcher, [("a", i) for i in range(3)])
    batcher.close(timeout=10)
    assert [f.result(0) for f in futures] == ["a:0", "a:1", "a:2"]  # closing cut the 5 s wait short, not the jobs
    with pytest.raises(BatcherClosed):
        batcher.submit("a", 9)
