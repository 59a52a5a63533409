"""The Dask cluster batch jobs run on: a `LocalCluster` on this machine by default (small: the machine is shared),
or the scheduler at ``GRIDATLAS_DASK_SCHEDULER`` (``tcp://host:8786``) for a real cluster."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("gridatlas.batch")

SCHEDULER_ENV = "GRIDATLAS_DASK_SCHEDULER"
#: Progress callback: (tasks done, tasks in all).
Progress = Callable[[int, int], None]


@contextmanager
def dask_client(address: str | None = None, *, workers: int = 2, threads_per_worker: int = 1,
                processes: bool = False, memory_limit: str = "2GiB") -> Iterator[Any]:
    """A `distributed.Client`: on `address`, else on ``GRIDATLAS_DASK_SCHEDULER``, else on a new `LocalCluster`
    of `workers` workers (threads in this process unless `processes`), closed at the end."""
    from distributed import Client, LocalCluster

    address = address or os.environ.get(SCHEDULER_ENV) or None
    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=processes,
                      dashboard_address=None, memory_limit=memory_limit) as cluster, Client(cluster) as client:
        yield client


def log_progress(done: int, total: int) -> None:
    """The default progress report: a log line per completed task."""
    log.info("batch: %d/%d tasks done", done, total)


def run_ordered(client: Any, futures: Sequence[Any], progress: Progress | None = None) -> list[Any]:
    """Wait for `futures`, reporting progress as each completes; their results in submission order."""
    from distributed import as_completed

    total = len(futures)
    t0 = time.perf_counter()
    for done, _ in enumerate(as_completed(futures), start=1):
        if progress is not None:
            progress(done, total)
    log.debug("batch: %d tasks in %.2f s", total, time.perf_counter() - t0)
    return client.gather(list(futures))


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """[start, stop) of `chunks` near-equal slices of n rows (fewer when n is small; none when n is 0)."""
    chunks = max(1, min(chunks, n))
    edges = [round(i * n / chunks) for i in range(chunks + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
