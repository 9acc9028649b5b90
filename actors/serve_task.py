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
import contextlib
import dataclasses
import itertools
import time
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from actors import serve_openai as oa
from actors.remote import actor_state
from actors.serve_auth import BearerAuth, check_binding, digest
from actors.serve_deploy import deploy
from actors.serve_http import (
    ADMISSION_HEADROOM,
    Admission,
    RequestFault,
    admitted,
    body_schema,
    error_responses,
    example_request,
    guarded,
    logger,
    one_line,
    page,
    parse_request,
    read_body,
)
from actors.serve_schema import ServeLimits
from ensemble.contracts import ContextError, Task


def build_task_app(spec: Any, workers: list[Any], limits: ServeLimits | None = None, token: str | None = None) -> Any:
    """The Serve application of ``spec``'s task over solver-worker actor handles (for ``serve.run``); with
    ``token``, every route but ``/healthz`` needs it."""
    task = spec.build_task()
    model = task.request_model()
    if model is None:
        raise ValueError(f"task {spec.task!r} has no Serve request model")
    if not workers:
        raise ValueError("the task app needs at least one solver worker")
    limits = limits or ServeLimits()
    if limits.max_body_bytes is None:  # the task's own limit (uploads need more than a question)
        limits = dataclasses.replace(limits, max_body_bytes=task.max_request_bytes)
    text_task = type(task).text_request is not Task.text_request
    api = FastAPI(title=f"iterative-consensus: {spec.task}",
                  description=f"{spec.task}: a generator guided by an ensemble of scorers (iterative consensus)")
    if token:
        api.add_middleware(BearerAuth, token_sha256=digest(token))

    @serve.deployment
    @serve.ingress(api)
    class TaskIngress:
        """HTTP ingress of one task; spreads requests over the solver workers."""

        def __init__(self, spec: Any, workers: list[Any], limits: ServeLimits) -> None:
            self.spec, self.workers, self.limits = spec, workers, limits
            self.task = spec.build_task()
            self.solver = spec.build()  # cheap: only for systems and hashes; workers hold the models
            self._next = itertools.cycle(range(len(workers)))
            self._checked: tuple[float, list[dict[str, Any]]] = (0.0, [])
            self.admission = Admission(limits.max_ongoing_requests, limits.max_queued_requests)

        async def _states(self, fresh: bool = False) -> list[dict[str, Any]]:
            """Every worker's liveness (cached one second)."""
            at, states = self._checked
            if fresh or time.monotonic() - at > 1.0:
                # a worker busy solving answers its health call only after it: busy is not dead
                states = list(await asyncio.gather(*(actor_state(w, 2.0) for w in self.workers)))
                self._checked = (time.monotonic(), states)
            return states

        async def _pick(self) -> Any:
            """The next worker not gone for good, or a 503."""
            states = await self._states()
            usable = [i for i, s in enumerate(states) if s["state"] != "dead"]
            if not usable:
                raise RequestFault(503, "every solver worker is gone for good; restart the app")
            index = next(self._next)
            return self.workers[index if index in usable else usable[0]]

        @api.get("/healthz")
        async def healthz(self) -> Any:
            """Every solver worker's state; 503 when no worker can take a request."""
            states = await self._states(fresh=True)
            dead = sum(s["state"] == "dead" for s in states)
            status = "refusing" if dead == len(states) else "degraded" if dead else "ok"
            return JSONResponse({"task": self.spec.task, "status": status, "workers": states},
                                status_code=503 if status == "refusing" else 200)

        @api.get("/", include_in_schema=False)
        async def index(self) -> Any:
            """The web page."""
            return page()

        @api.get("/v1/info")
        async def describe(self) -> dict[str, Any]:
            """The task, its systems, the solver settings and an example request."""
            return {"task": self.spec.task, "systems": self.solver.systems(), "settings": self.spec.settings,
                    "limits": self.limits.__dict__, "example": example_request(model)}

        @api.post(f"/v1/{spec.task}", openapi_extra=body_schema(model), responses=error_responses())
        async def solve(self, request: Request) -> Any:
            """Solve one request with the evaluated system it names."""
            return await guarded(request, lambda rid: admitted(self.admission, lambda: self._solve(request, rid)))

        async def _solve(self, request: Request, rid: str) -> Any:
            body = parse_request(model, await read_body(request, self.limits.max_body_bytes))
            item, system, seed = self._prepare(body)
            if request.query_params.get("stream") in ("1", "true"):  # NDJSON: rounds as they end, then the result
                events = self._events(await self._pick(), item, system, seed, rid)
                return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")
            return self.task.response(await self._run(item, system, seed))

        def _prepare(self, body: Any) -> tuple[Any, str, int]:
            """``(item, system, seed)`` of a validated request; 400 when the task cannot take it."""
            try:
                item, system, seed = self.task.request_item(body)
                self.solver.check_systems([system])
            except (ValueError, KeyError) as err:
                raise RequestFault(400, one_line(err)) from None
            return item, system, seed

        async def _run(self, item: Any, system: str, seed: int) -> dict[str, Any]:
            """The result row; a timeout cancels the run (504), an input fault is a 400."""
            ref = (await self._pick()).solve.remote(item, system, seed)
            try:
                return await asyncio.wait_for(ref, self.limits.request_timeout_s)
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

        if text_task:  # OpenAI-compatible endpoints (actors.serve_openai)

            @api.post("/v1/chat/completions", openapi_extra=body_schema(oa.ChatRequest), responses=error_responses())
            async def chat_completions(self, request: Request) -> Any:
                """OpenAI chat completion: the last user message is the prompt; ``consensus`` holds the rounds."""
                return await guarded(request, lambda rid: admitted(self.admission, lambda: self._openai(request, rid, True)))

            @api.post("/v1/completions", openapi_extra=body_schema(oa.CompletionRequest), responses=error_responses())
            async def completions(self, request: Request) -> Any:
                """OpenAI (legacy) completion of a prompt; ``consensus`` holds the rounds."""
                return await guarded(request, lambda rid: admitted(self.admission, lambda: self._openai(request, rid, False)))

            @api.get("/v1/models")
            async def models(self) -> dict[str, Any]:
                """The task's systems as OpenAI model ids."""
                return {"object": "list", "data": [{"id": s, "object": "model", "created": 0,
                                                    "owned_by": "iterative-consensus"} for s in self.solver.systems()]}

        async def _openai(self, request: Request, rid: str, chat: bool) -> Any:
            body = parse_request(oa.ChatRequest if chat else oa.CompletionRequest,
                                 await read_body(request, self.limits.max_body_bytes))
            prompt = body.prompt() if chat else body.prompt
            try:
                media = body.media() if chat else ()
                task_request = self.task.text_request(prompt, oa.pick_system(body.model, self.solver.systems()),
                                                      body.seed, media)
            except ValueError as err:
                raise RequestFault(400, one_line(err)) from None
            item, system, seed = self._prepare(task_request)
            if not body.stream:
                response = self.task.response(await self._run(item, system, seed))
                return oa.completion_body(chat, rid, system, self.task.response_text(response), response)
            events = self._events(await self._pick(), item, system, seed, rid)
            return StreamingResponse(oa.sse(chat, rid, system, events, self.task), media_type="text/event-stream")

        async def _events(self, worker: Any, item: Any, system: str, seed: int, rid: str) -> Any:
            """``{"round"}`` events as rounds end, then ``{"response"}``; cancelled on timeout or disconnect."""
            refs = worker.solve_stream.options(num_returns="streaming").remote(item, system, seed)
            finished = False
            try:
                async with asyncio.timeout(self.limits.request_timeout_s):
                    async for ref in refs:
                        event = await ref
                        if "round" in event:
                            yield event
                        else:
                            finished = True
                            yield {"response": self.task.response(event["row"])}
            except TimeoutError:
                yield {"error": {"message": f"the run exceeded {self.limits.request_timeout_s:g} s", "code": 504,
                                 "request_id": rid}}
            except Exception as err:  # noqa: BLE001 - the stream has begun: report in-band, one line
                logger.exception("request %s failed while streaming: %s", rid, one_line(err))
                yield {"error": {"message": f"internal error (request id {rid})", "code": 500, "request_id": rid}}
            finally:
                if not finished:
                    with contextlib.suppress(Exception):
                        ray.cancel(refs)

    # refusals are ours (503 + Retry-After, :class:`actors.serve_http.Admission`), not Serve's router's
    headroom = limits.max_ongoing_requests + limits.max_queued_requests + ADMISSION_HEADROOM
    deployment = TaskIngress.options(max_ongoing_requests=headroom, max_queued_requests=-1,
                                     ray_actor_options={"num_cpus": limits.ingress_cpus})
    return deployment.bind(spec, workers, limits)


async def _ndjson(events: Any) -> Any:
    """``{"round"}`` / ``{"result"}`` / ``{"error", "status"}`` lines of :meth:`TaskIngress._events` items."""
    import json

    async for event in events:
        if "response" in event:
            yield json.dumps({"result": event["response"]}) + "\n"
        elif "error" in event:
            yield json.dumps({"error": event["error"]["message"], "status": event["error"]["code"],
                              "request_id": event["error"]["request_id"]}) + "\n"
        else:
            yield json.dumps(event) + "\n"


def start_task(spec: Any, workers: list[Any], host: str = "127.0.0.1", port: int | None = None,
               limits: ServeLimits | None = None, name: str | None = None, route_prefix: str | None = None,
               token: str | None = None) -> str:
    """Deploy the task app as ``name`` (default: the task's name); returns its base URL.

    See :func:`actors.serve_deploy.deploy` for how names, route prefixes and HTTP options are chosen;
    binding beyond loopback needs ``token`` (:mod:`actors.serve_auth`).
    """
    check_binding(host, token)
    return deploy(build_task_app(spec, workers, limits, token), name or spec.task, host, port, route_prefix)
