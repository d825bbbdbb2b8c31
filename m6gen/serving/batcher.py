"""Micro-batching: requests from many threads or coroutines, run in batches by one worker thread.

A model is not safe to call from two threads at once, and on a CPU one call over 16 users costs
far less than 16 calls over one. So every request becomes a job in one queue, and a single worker
thread takes the oldest job together with the jobs of the same kind queued behind it: up to
``max_batch`` of them, waiting at most ``max_wait_ms`` for more while it is idle. Jobs of another
kind (another ``key``) wait for the next batch.

Each job has its own ``concurrent.futures.Future``. A client that goes away cancels its future:
a job not started yet is dropped, one already in a running batch just has no one to read its
result. When a whole batch raises, its jobs are run again one by one, so one bad request fails
alone and its batch mates still get their results.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

RunBatch = Callable[[Hashable, list[Any]], list[Any]]  # (key, payloads) -> one result or Exception per payload


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass
class Job:
    key: Hashable
    payload: Any
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker has done, for ``/info`` and for tests that check requests were gathered."""

    batches: int = 0  # calls of run_batch (a batch that raised, then each of its retries, count apiece)
    jobs: int = 0  # jobs run (a retried job counts once)
    dropped: int = 0  # jobs whose client had gone before their batch started
    retried: int = 0  # batches that raised and were run again one job at a time
    largest: int = 0  # most jobs in one batch
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))  # size of each recent batch, newest last


class MicroBatcher:
    """One worker thread running ``run_batch`` over gathered jobs; :meth:`submit` may be called from any thread.

    Args:
        run_batch: ``(key, payloads) -> results``, one result per payload in order; a result that
            is an ``Exception`` instance fails only its own job.
        max_batch: most jobs per call of ``run_batch``.
        max_wait_ms: how long an idle worker waits for more jobs of the same key before it runs.
    """

    def __init__(self, run_batch: RunBatch, max_batch: int, max_wait_ms: float, name: str = "m6gen-model"):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch >= 1 and max_wait_ms >= 0 expected, got {max_batch}, {max_wait_ms}")
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers' side
    def submit(self, key: Hashable, payload: Any) -> Future:
        """Queue one job; its future gets the result (or the exception) of its share of a batch."""
        job = Job(key, payload)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish the queued ones, then stop the worker (graceful shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # ------------------------------------------------------------------ the worker
    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            if jobs:
                self._run(jobs[0].key, jobs)

    def _take(self) -> list[Job] | None:
        """The next batch (possibly empty when every job of it was cancelled); None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            key = self._queue[0].key
            deadline = time.monotonic() + self.max_wait
            while not self._closed and self._count(key) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._pop(key)

    def _count(self, key: Hashable) -> int:
        return sum(j.key == key for j in self._queue)

    def _pop(self, key: Hashable) -> list[Job]:
        """Up to ``max_batch`` jobs of ``key``, oldest first, minus those whose client has gone."""
        taken, kept = [], []
        for job in self._queue:
            (taken if job.key == key and len(taken) < self.max_batch else kept).append(job)
        self._queue = kept
        live = [j for j in taken if j.future.set_running_or_notify_cancel()]  # False: cancelled
        self.stats.dropped += len(taken) - len(live)
        return live

    def _run(self, key: Hashable, jobs: list[Job]) -> None:
        self._count_batch(len(jobs))
        try:
            results = self.run_batch(key, [j.payload for j in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} jobs")
        except Exception as err:  # noqa: BLE001  (whatever failed, each job gets its own answer)
            if len(jobs) > 1:
                self.stats.retried += 1
                for job in jobs:
                    self._run(key, [job])
                return
            results = [err]
        self.stats.jobs += len(jobs)
        for job, result in zip(jobs, results):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _count_batch(self, size: int) -> None:
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, size)
        self.stats.sizes.append(size)
