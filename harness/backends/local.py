"""The default backend: stages one after another in this process (or, with `workers > 1`, in a
process pool that runs independent stages side by side)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from harness.backends import BACKENDS
from harness.stages import Stage, execute_stage


class LocalBackend:
    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def run(self, stages: list[Stage], on_done: Callable[[Stage], None], echo: Callable[[str], None] = print) -> None:
        if self.workers == 1:
            for stage in stages:
                if stage.complete:
                    continue
                echo(f"  run  {stage.label} {stage.key}")
                execute_stage(stage.spec())
                on_done(stage)
            return
        self._run_pool(stages, on_done, echo)

    def _run_pool(self, stages: list[Stage], on_done: Callable[[Stage], None], echo: Callable[[str], None]) -> None:
        import multiprocessing

        remaining = {s.id: s for s in stages if not s.complete}
        running: dict[Future, Stage] = {}
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no torch state shared across fork
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            while remaining or running:
                for stage_id, stage in list(remaining.items()):
                    if all(dep.complete for dep in stage.inputs.values()):
                        echo(f"  run  {stage.label} {stage.key}")
                        running[pool.submit(execute_stage, stage.spec())] = stage
                        del remaining[stage_id]
                if not running:
                    raise RuntimeError(f"stages blocked on unfinished inputs: {sorted(remaining)}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    stage = running.pop(future)
                    future.result()  # re-raise a stage failure here
                    on_done(stage)


BACKENDS.register("local", LocalBackend)
