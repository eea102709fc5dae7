"""The default backend: stages one after another in this process (or, with `workers > 1`, in a
process pool that runs independent stages side by side, whose workers die with this process)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from harness.backends.base import BACKENDS, OnFailed, blocked_by
from harness.executors import execute_stage
from harness.planning import Stage
from harness.processes import stage_worker_init


class LocalBackend:
    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield  # nothing to start: each run() call uses this process or its own pool

    def run(self, stages: list[Stage], on_done: Callable[[Stage], None], echo: Callable[[str], None] = print,
            on_failed: OnFailed | None = None) -> None:
        """Run `stages` (in dependency order). A failure raises, or with `on_failed` is reported to it and
        only the stages depending on the failed one are left out."""
        if self.workers == 1:
            failed: set[str] = set()
            for stage in stages:
                if stage.complete:
                    continue
                if blocked_by(stage, failed):
                    failed.add(stage.id)  # not run: an input failed (the runner reports the root)
                    continue
                echo(f"  run  {stage.label} {stage.key}")
                try:
                    execute_stage(stage.spec())
                except Exception as exc:
                    if on_failed is None:
                        raise
                    failed.add(stage.id)
                    on_failed(stage, exc)
                    continue
                on_done(stage)
            return
        self._run_pool(stages, on_done, echo, on_failed)

    def _run_pool(self, stages: list[Stage], on_done: Callable[[Stage], None], echo: Callable[[str], None],
                  on_failed: OnFailed | None) -> None:
        import multiprocessing

        remaining = {s.id: s for s in stages if not s.complete}
        running: dict[Future, Stage] = {}
        failed: set[str] = set()
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no torch state shared across fork
        # Workers die with this process (even on kill -9): none is left training, or idle holding its memory.
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=stage_worker_init,
                                 initargs=(os.getpid(),)) as pool:
            while remaining or running:
                for stage_id, stage in list(remaining.items()):
                    if blocked_by(stage, failed):
                        failed.add(stage_id)  # an input failed: never runs
                        del remaining[stage_id]
                    elif all(dep.complete for dep in stage.inputs.values()):
                        echo(f"  run  {stage.label} {stage.key}")
                        running[pool.submit(execute_stage, stage.spec())] = stage
                        del remaining[stage_id]
                if not running:
                    if remaining:
                        raise RuntimeError(f"stages blocked on unfinished inputs: {sorted(remaining)}")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    stage = running.pop(future)
                    exc = future.exception()
                    if exc is None:
                        on_done(stage)
                    elif on_failed is None:
                        raise exc
                    else:
                        failed.add(stage.id)
                        on_failed(stage, exc)


BACKENDS.register("local", LocalBackend)
