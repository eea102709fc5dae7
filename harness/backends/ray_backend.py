"""Ray backend: each stage is a Ray task with its own resource request; Ray does the scheduling.

    harness run GRID --backend ray                      # a local Ray instance on this machine
    harness run GRID --backend ray --ray-address auto   # join a running cluster (`ray start --head`)

Dependencies are expressed the Ray way: a stage's task gets the object refs of its input stages'
tasks as arguments, so Ray starts it only after they finished (and fails it, without running it,
when one of them failed). Nothing is scheduled by the harness itself.

What a task does is `harness.executors.execute_stage(spec)`: it reads its inputs from the stage store
and publishes its output there atomically, so a task killed mid-stage (a preempted node, an OOM
kill, `kill -9` of the worker) is simply retried by Ray (`max_retries`) and leaves nothing half
written. On a cluster the stage store (`HARNESS_RESULTS_DIR`) must be a filesystem every node
mounts at the same path (NFS, Lustre, ...); MLflow is still written only by the driver.

Resources per stage kind default to `harness.executors.DEFAULT_RESOURCES` and are overridden with the
backend option `resources={kind: {"num_cpus": 4, "num_gpus": 1, "memory": 32e9}}` (memory in
bytes, as Ray takes it), or, from any command line, with the same mapping as JSON in the
environment variable `HARNESS_RAY_RESOURCES`. A kind's `accelerate: {num_processes: N, args: [...]}`
runs its stages under `accelerate launch` on the task's GPUs (multi-GPU training; see
`harness/backends/accelerate_launch.py`):

    HARNESS_RAY_RESOURCES='{"train_policy": {"num_gpus": 1}, "evaluate": {"num_gpus": 1}}' \
        harness run GRID --backend ray --ray-address auto
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from harness.backends.base import BACKENDS, OnFailed, blocked_by
from harness.executors import DEFAULT_RESOURCES, execute_stage
from harness.planning import Stage

RESOURCES_ENV = "HARNESS_RAY_RESOURCES"

# Resource keys Ray accepts in `.options(...)`; anything else is a typo that would otherwise be
# silently ignored and leave a GPU stage on a CPU worker.
_RESOURCE_KEYS = {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type"}

# Environment a stage needs to find the same stores and stay offline on a worker. Only these
# prefixes travel with a task: secrets (judge API keys) are never copied into task arguments, which
# Ray keeps in its object store; workers of a local instance inherit them from the driver anyway,
# cluster workers get them from the cluster's own environment.
_FORWARDED_PREFIXES = ("HARNESS_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "NLTK_DATA", "OMP_NUM_THREADS",
                       "MKL_NUM_THREADS", "DATASETS_VERBOSITY", "TQDM_DISABLE")


def _forwarded_env() -> dict[str, str]:
    from harness.paths import model_cache_dir, results_dir

    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIXES)}
    # Absolute paths: a worker's working directory is not the driver's.
    env["HARNESS_RESULTS_DIR"] = str(results_dir())
    env["HARNESS_MODEL_DIR"] = str(model_cache_dir())
    return env


def _run_stage_task(spec: dict[str, Any], env: dict[str, str], launch: dict[str, Any] | None,
                    *upstream: str) -> str:
    """Body of a stage's Ray task. `upstream` are the published folders of its inputs: passing their
    refs as arguments is what makes Ray wait for them; the values themselves are not needed.
    `launch` ({num_processes, args}) runs the stage under `accelerate launch` on the task's GPUs."""
    os.environ.update(env)  # the worker process may be reused across grids with other stores
    from harness.console import apply_quiet_from_env

    apply_quiet_from_env()
    if launch:
        from harness.backends.accelerate_launch import launch_stage

        return launch_stage(spec, int(launch["num_processes"]), list(launch.get("args", [])))
    return execute_stage(spec)


def _check_resources(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = {kind: dict(request) for kind, request in DEFAULT_RESOURCES.items()}
    for kind, request in resources.items():
        if kind not in DEFAULT_RESOURCES:
            raise ValueError(f"resources: unknown stage kind {kind!r}; valid kinds: {', '.join(DEFAULT_RESOURCES)}")
        if not isinstance(request, dict):
            raise ValueError(f"resources.{kind}: expected a mapping like {{num_cpus: 2, num_gpus: 1}}, got {request!r}")
        unknown = sorted(set(request) - _RESOURCE_KEYS - {"accelerate"})
        if unknown:
            raise ValueError(f"resources.{kind}: unknown key(s) {unknown}; valid: {sorted(_RESOURCE_KEYS)} "
                             "and accelerate")
        launch = request.get("accelerate")
        if launch is not None:
            if (not isinstance(launch, dict) or set(launch) - {"num_processes", "args"}
                    or not isinstance(launch.get("num_processes"), int) or launch["num_processes"] < 1
                    or not all(isinstance(a, str) for a in launch.get("args", []))):
                raise ValueError(f"resources.{kind}.accelerate: expected {{num_processes: N >= 1, args: [str, ...]}}, "
                                 f"got {launch!r}")
        merged[kind].update(request)
    return merged


class RayBackend:
    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3,
                 retry_exceptions: bool = False, resources: dict[str, dict[str, Any]] | None = None,
                 init_kwargs: dict[str, Any] | None = None):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.num_cpus = num_cpus
        # Worker/node deaths are retried up to max_retries; a Python exception in a stage (a bad
        # config, a bug) is not, unless retry_exceptions: rerunning it would only fail again.
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        if resources is None and os.environ.get(RESOURCES_ENV):
            try:
                resources = json.loads(os.environ[RESOURCES_ENV])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{RESOURCES_ENV} is not valid JSON: {exc}") from None
            if not isinstance(resources, dict):
                raise ValueError(f"{RESOURCES_ENV}: expected a JSON object {{kind: {{num_gpus: 1}}}}")
        self.resources = _check_resources(resources or {})
        self.init_kwargs = dict(init_kwargs or {})

    def _ensure_ray(self) -> bool:
        """Connect to Ray unless already connected; True if this call started the connection."""
        import ray

        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        if self.address:
            kwargs["address"] = self.address
        elif self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        ray.init(**kwargs)
        return True

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One Ray connection for several `run` calls (the runner's data phase, then the rest)."""
        import ray

        started = self._ensure_ray()
        try:
            yield
        finally:
            if started:
                ray.shutdown()

    def run(self, stages: list[Stage], on_done: Callable[[Stage], None], echo: Callable[[str], None] = print,
            on_failed: OnFailed | None = None) -> None:
        """Run `stages` as Ray tasks. Without `on_failed`, failures are collected while the independent
        stages finish, then raised together; with it, each failed stage is reported to it."""
        with self.session():
            self._run(stages, on_done, echo, on_failed)

    def _run(self, stages: list[Stage], on_done: Callable[[Stage], None], echo: Callable[[str], None],
             on_failed: OnFailed | None = None) -> None:
        import ray

        task = ray.remote(_run_stage_task)
        env = _forwarded_env()
        refs: dict[str, Any] = {}  # stage id -> object ref of its task
        by_ref: dict[Any, Stage] = {}
        # A stage that cannot run on its accelerate ranks (PPO's batch sizes must split over them) fails
        # the grid here, before any stage is submitted, not after the stages it depends on have run.
        from harness.launch import check_launch

        problems = [problem for stage in stages if not stage.complete
                    and (launch := self.resources[stage.kind].get("accelerate"))
                    for problem in check_launch(stage.spec(), int(launch["num_processes"]))]
        if problems:
            raise ValueError("; ".join(problems))
        # `stages` come in dependency order (the runner's unique_stages), so every input of a stage
        # is either already published or already submitted when the stage itself is submitted.
        for stage in stages:
            if stage.complete or stage.id in refs:
                continue
            upstream = []
            for dep in stage.inputs.values():
                if dep.id in refs:
                    upstream.append(refs[dep.id])
                elif not dep.complete:
                    raise RuntimeError(f"stage {stage.id}: input {dep.id} is neither published nor among the "
                                       "stages to run")
            request = dict(self.resources[stage.kind])
            launch = request.pop("accelerate", None)
            options = {**request, "max_retries": self.max_retries,
                       "retry_exceptions": self.retry_exceptions, "name": f"harness:{stage.label}:{stage.key}"}
            ref = task.options(**options).remote(stage.spec(), env, launch, *upstream)
            refs[stage.id] = ref
            by_ref[ref] = stage
            echo(f"  submit {stage.label} {stage.key} {self.resources[stage.kind]}")

        pending = list(by_ref)
        failures: list[tuple[Stage, BaseException]] = []
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    stage = by_ref[ref]
                    try:
                        ray.get(ref)
                    except Exception as exc:  # keep going: independent stages still finish and get cached
                        blocked = blocked_by(stage, {f.id for f, _ in failures})
                        failures.append((stage, exc))
                        if on_failed is None:
                            echo(f"  FAILED {stage.label} {stage.key}: {type(exc).__name__}")
                        elif not blocked:  # Ray failed it for its failed input: the runner reports the root
                            on_failed(stage, exc)
                        continue
                    on_done(stage)
        except BaseException:
            for ref in pending:  # Ctrl-C or a logging error: do not leave tasks running on the cluster
                ray.cancel(ref, force=True)
            raise
        if failures and on_failed is None:
            # A stage failed because its input failed carries the input's error: report the roots.
            roots = [(s, e) for s, e in failures if not any(d.id in {f.id for f, _ in failures}
                                                             for d in s.inputs.values())]
            stage, exc = (roots or failures)[0]
            raise RuntimeError(f"{len(failures)} stage(s) failed on Ray; first: {stage.id} ({stage.label}): "
                               f"{exc}") from exc


BACKENDS.register("ray", RayBackend)
