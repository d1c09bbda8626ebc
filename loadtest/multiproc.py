"""``rtserver-load --processes N``: one run's conversations split over N client processes.

Process ``k`` plays conversations ``k, k + N, k + 2N, ...``, each at the ramp slot it would
have in a single process, from one shared start time, so the offered load is the same
as one process's. Every process returns its raw ``RunParts`` (each turn's record, not a
summary); the parent merges them (``RunParts.merge``) and summarises once, so every
percentile of the report is exact over all samples, never an average of percentiles.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import TextIO

from loadtest.runner import LoadConfig, LoadRun, RunParts
from rtserver.runner import run_uvloop

#: Time allowed for the client processes to start before the shared start time.
START_DELAY_S = 2.0


def _play(cfg: LoadConfig) -> RunParts:
    parts: RunParts = run_uvloop(LoadRun(cfg).run_parts(None))
    return parts


def run_processes(cfg: LoadConfig, processes: int, progress: TextIO | None = sys.stderr) -> RunParts:
    """Play ``cfg`` over ``processes`` client processes (at most one per conversation) and
    return the merged raw results; ``RunParts.report`` summarises them."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    processes = min(processes, cfg.conversations)
    start_at = time.time() + START_DELAY_S
    shares = [
        dataclasses.replace(cfg, index_offset=k, index_stride=processes, start_at=start_at, progress_every_s=0.0)
        for k in range(processes)
    ]
    if progress is not None:
        print(f"{processes} client processes share {cfg.conversations} conversations", file=progress, flush=True)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return RunParts.merge(list(pool.map(_play, shares)))
