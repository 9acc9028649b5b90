"""Ray Serve for any task: the task's typed request → a pool of solver workers → the task's typed response.

``build_task_app(spec, workers)`` is the one app factory over the task contract
(:class:`~ensemble.contracts.Task`): ``POST /v1/<task>`` takes the task's request model (math: a
question; image: a prompt or class; robot: a goal and a scene seed), turns it into an item, a system
and a seed, runs the **same solver as evaluation** on a :class:`~actors.workers.SolverWorker`
(models loaded once per worker), and answers with the task's response. ``GET /healthz`` reports
every worker; ``GET /v1/info`` the task, its systems and settings. Input faults are 4xx with a
one-line reason; server faults a 500 with the request id (see :mod:`actors.serve_http`).
"""

# No ``from __future__ import annotations``: FastAPI reads the request model from the live annotation.

import asyncio
import itertools
from typing import Any

import ray
from fastapi import FastAPI, Request
from ray import serve

from actors.serve_deploy import deploy
from actors.serve_http import (
    RequestFault,
    body_schema,
    error_responses,
    guarded,
    one_line,
    parse_request,
    read_body,
)
from actors.serve_schema import ServeLimits
from ensemble.contracts import ContextError


def build_task_app(spec: Any, workers: list[Any], limits: ServeLimits | None = None) -> Any:
    """The Serve application of ``spec``'s task over solver-worker actor handles (for ``serve.run``)."""
    task = spec.build_task()
    model = task.request_model()
    if model is None:
        raise ValueError(f"task {spec.task!r} has no Serve request model")
    if not workers:
        raise ValueError("the task app needs at least one solver worker")
    limits = limits or ServeLimits()
    api = FastAPI(title=f"iterative-consensus: {spec.task}",
                  description=f"{spec.task}: a generator guided by an ensemble of scorers (iterative consensus)")

    @serve.deployment
    @serve.ingress(api)
    class TaskIngress:
        """HTTP ingress of one task; spreads requests over the solver workers."""

        def __init__(self, spec: Any, workers: list[Any], limits: ServeLimits) -> None:
            self.spec, self.workers, self.limits = spec, workers, limits
            self.task = spec.build_task()
            self.solver = spec.build()  # cheap: only for systems and hashes; workers hold the models
            self._next = itertools.cycle(range(len(workers)))

        @api.get("/healthz")
        async def healthz(self) -> dict[str, Any]:
            """Every solver worker's health."""
            return {"task": self.spec.task, "workers": [await w.health.remote() for w in self.workers]}

        @api.get("/v1/info")
        async def describe(self) -> dict[str, Any]:
            """The task, its systems and the solver settings."""
            return {"task": self.spec.task, "systems": self.solver.systems(), "settings": self.spec.settings,
                    "limits": self.limits.__dict__}

        @api.post(f"/v1/{spec.task}", openapi_extra=body_schema(model), responses=error_responses())
        async def solve(self, request: Request) -> Any:
            """Solve one request with the evaluated system it names."""
            return await guarded(request, lambda rid: self._solve(request, rid))

        async def _solve(self, request: Request, rid: str) -> dict[str, Any]:
            body = parse_request(model, await read_body(request, self.limits.max_body_bytes))
            try:
                item, system, seed = self.task.request_item(body)
                self.solver.check_systems([system])
            except (ValueError, KeyError) as err:
                raise RequestFault(400, one_line(err)) from None
            ref = self.workers[next(self._next)].solve.remote(item, system, seed)
            try:
                row = await asyncio.wait_for(ref, self.limits.request_timeout_s)
            except TimeoutError:
                ray.cancel(ref)
                raise RequestFault(504, f"the run exceeded {self.limits.request_timeout_s:g} s") from None
            except asyncio.CancelledError:
                ray.cancel(ref)
                raise
            except Exception as err:
                if isinstance(getattr(err, "cause", None) or err, ContextError):
                    raise RequestFault(400, one_line(err)) from None
                raise
            return self.task.response(row)

    deployment = TaskIngress.options(max_ongoing_requests=limits.max_ongoing_requests,
                                     max_queued_requests=limits.max_queued_requests,
                                     ray_actor_options={"num_cpus": limits.ingress_cpus})
    return deployment.bind(spec, workers, limits)


def start_task(spec: Any, workers: list[Any], host: str = "127.0.0.1", port: int | None = None,
               limits: ServeLimits | None = None, name: str | None = None, route_prefix: str | None = None) -> str:
    """Deploy the task app as ``name`` (default: the task's name); returns its base URL.

    See :func:`actors.serve_deploy.deploy` for how names, route prefixes and HTTP options are chosen.
    """
    return deploy(build_task_app(spec, workers, limits), name or spec.task, host, port, route_prefix)
