"""Ray Serve endpoint: validated HTTP requests → coordinator actors → scorer actors.

``POST /v1/consensus`` runs one consensus loop and answers with the output and every round record
(attribution included); with ``"stream": true`` it streams one JSON line per round as the rounds end
(NDJSON), then the result. ``GET /healthz`` reports the coordinators; ``GET /v1/info`` the
configuration. Bound to 127.0.0.1 unless told otherwise. Input faults are 4xx with a one-line reason
(see :mod:`actors.serve_http`); a run that times out, fails or loses its client is cancelled.
"""

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from actors.coordinator import jsonable
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
    guarded,
    logger,
    one_line,
    page,
    parse_request,
    read_body,
)
from actors.serve_schema import DEFAULT_BODY_BYTES, ConsensusRequest, ServeLimits, check_size
from ensemble.consensus import ConsensusResult, RoundRecord
from ensemble.contracts import ContextError


def result_json(result: ConsensusResult) -> dict[str, Any]:
    """A consensus result as plain JSON; ``missing_scorers`` names every scorer that missed a round."""
    missing = sorted({name for r in result.rounds for name in r.missing})
    return {
        "output": jsonable(result.output),
        "stop_reason": result.stop_reason,
        "n_candidates": result.n_candidates,
        "duration_s": result.duration_s,
        "degraded": bool(missing),
        "missing_scorers": missing,
        "rounds": [r.to_dict() for r in result.rounds],
    }


HEALTH_TTL_S = 1.0
"""Seconds a liveness check is reused by the ingress before asking the actors again."""


def _input_fault(err: BaseException) -> bool:
    """True when ``err`` (possibly Ray-wrapped) was caused by the request's input."""
    return isinstance(getattr(err, "cause", None) or err, ContextError)


def _ingress(token_sha256: str | None) -> Any:
    """A fresh FastAPI app and its ingress class (each app its own, so each its own token)."""
    api = FastAPI(title="iterative-consensus", description="Composing pre-trained models by iterative consensus")
    if token_sha256:
        api.add_middleware(BearerAuth, token_sha256=token_sha256)

    @serve.deployment
    @serve.ingress(api)
    class ConsensusIngress:
        """The HTTP ingress. Holds coordinator actor handles and spreads requests over them.

        Args:
            coordinators: coordinator actor handles (:class:`actors.runtime.RayRuntime`).
            limits: request limits.
            info: the run configuration shown at ``/v1/info``.
        """

        def __init__(self, coordinators: list[Any], limits: ServeLimits, info: dict[str, Any]) -> None:
            if not coordinators:
                raise ValueError("the ingress needs at least one coordinator")
            self.coordinators = coordinators
            self.limits = limits
            self.info = info
            self._next = itertools.cycle(range(len(coordinators)))
            self._checked: tuple[float, list[dict[str, Any]]] = (0.0, [])
            self.admission = Admission(limits.max_ongoing_requests, limits.max_queued_requests)

        async def _liveness(self, fresh: bool = False) -> list[dict[str, Any]]:
            """Every coordinator's :meth:`~actors.coordinator.Coordinator.liveness` (cached ``HEALTH_TTL_S``)."""
            at, states = self._checked
            if fresh or time.monotonic() - at > HEALTH_TTL_S:
                states = list(await asyncio.gather(*(actor_state(c, 5.0) for c in self.coordinators)))
                for coordinator, state in zip(self.coordinators, states, strict=True):
                    if state["state"] == "ok":
                        try:
                            state.update(await asyncio.wait_for(coordinator.liveness.remote(), 10.0))
                        except Exception as err:  # noqa: BLE001 - died or hung between the two calls
                            state.update(state="error", reason=one_line(err))
                self._checked = (time.monotonic(), states)
            return states

        @staticmethod
        def _gone(states: list[dict[str, Any]]) -> list[str]:
            """Scorers some coordinator has lost for good."""
            return sorted({n for s in states for n, st in s.get("scorers", {}).items() if st["state"] == "dead"})

        async def _admit(self) -> Any:
            """The coordinator for the next request, or a 503 that says why none may take it."""
            states = await self._liveness()
            gone = self._gone(states)
            if gone and not self.limits.degrade:
                raise RequestFault(503, f"scorer(s) {', '.join(gone)} are gone for good (actor died, no restarts left); "
                                        f"restart the app, or start it with --degrade to answer without them")
            live = [i for i, s in enumerate(states) if s["state"] == "ok"]
            if not live:
                raise RequestFault(503, "no coordinator is alive; restart the app", {"Retry-After": "5"})
            index = next(self._next)
            return self.coordinators[index if index in live else live[0]]

        @api.get("/healthz")
        async def healthz(self) -> Any:
            """Every coordinator's health and every scorer's state; 503 when requests would be refused."""
            states = await self._liveness(fresh=True)
            gone = self._gone(states)
            down = not any(s["state"] == "ok" for s in states) or (gone and not self.limits.degrade)
            status = "refusing" if down else "degraded" if gone else "ok"
            body = {"status": status, "degrade": self.limits.degrade, "gone_scorers": gone, "coordinators": states}
            return JSONResponse(body, status_code=503 if down else 200)

        @api.get("/", include_in_schema=False)
        async def index(self) -> Any:
            """The web page."""
            return page()

        @api.get("/v1/info")
        async def describe(self) -> dict[str, Any]:
            """The served configuration and limits."""
            return {"run": self.info, "limits": self.limits.__dict__}

        @api.post("/v1/consensus", openapi_extra=body_schema(ConsensusRequest), responses=error_responses())
        async def consensus(self, request: Request) -> Any:
            """Run one consensus loop (or stream its rounds as NDJSON lines)."""
            return await guarded(request, lambda rid: admitted(self.admission, lambda: self._consensus(request, rid)))

        async def _consensus(self, request: Request, rid: str) -> Any:
            body = parse_request(ConsensusRequest, await read_body(request, self.limits.max_body_bytes or DEFAULT_BODY_BYTES))
            reason = check_size(body, self.limits)
            if reason:
                raise RequestFault(413, reason)
            coordinator = await self._admit()
            loop_id = f"{rid}-{uuid.uuid4().hex[:8]}"
            if body.stream:
                await self._call(coordinator.check_context.remote(body.context))  # 400 before the stream begins
                return StreamingResponse(self._stream(coordinator, body, loop_id, rid),
                                         media_type="application/x-ndjson")
            return result_json(await self._call(coordinator.run.remote(body.context, body.seed, loop_id=loop_id)))

        async def _call(self, ref: Any) -> Any:
            """Await a coordinator call: timeout → cancelled + 504; input faults → 400; a disconnect cancels it."""
            try:
                return await asyncio.wait_for(ref, self.limits.request_timeout_s)
            except TimeoutError:
                ray.cancel(ref)  # cancels the loop and its in-flight scorer calls
                raise RequestFault(504, f"the run exceeded {self.limits.request_timeout_s:g} s") from None
            except asyncio.CancelledError:
                ray.cancel(ref)
                raise
            except Exception as err:
                if _input_fault(err):
                    raise RequestFault(400, one_line(err)) from None
                raise

        async def _stream(self, coordinator: Any, body: ConsensusRequest, loop_id: str, rid: str) -> AsyncIterator[str]:
            """Round lines, then the result line; on timeout, error or client disconnect the loop is cancelled."""
            refs = coordinator.stream.options(num_returns="streaming").remote(body.context, body.seed, loop_id=loop_id)
            finished = False
            try:
                async with asyncio.timeout(self.limits.request_timeout_s):
                    async for ref in refs:
                        item = await ref
                        if isinstance(item, RoundRecord):
                            yield json.dumps({"round": item.to_dict()}) + "\n"
                        else:
                            finished = True
                            yield json.dumps({"result": result_json(item)}) + "\n"
            except TimeoutError:
                yield json.dumps({"error": f"the run exceeded {self.limits.request_timeout_s:g} s", "status": 504,
                                  "request_id": rid}) + "\n"
            except Exception as err:  # noqa: BLE001 - the stream has begun: report in-band, one line
                if _input_fault(err):
                    yield json.dumps({"error": one_line(err), "status": 400, "request_id": rid}) + "\n"
                else:
                    logger.exception("request %s failed while streaming: %s", rid, one_line(err))
                    yield json.dumps({"error": f"internal error (request id {rid})", "status": 500,
                                      "request_id": rid}) + "\n"
            finally:
                if not finished:  # timeout, error, or the client went away: stop the loop now
                    coordinator.cancel.remote(loop_id)

    return ConsensusIngress


def build_app(coordinators: list[Any], limits: ServeLimits | None = None, info: dict[str, Any] | None = None,
              token: str | None = None) -> Any:
    """The Serve application for ``serve.run``; with ``token``, every route but ``/healthz`` needs it."""
    limits = limits or ServeLimits()
    deployment = _ingress(digest(token) if token else None).options(
        # refusals are ours (503 + Retry-After, :class:`actors.serve_http.Admission`), not Serve's router's
        max_ongoing_requests=limits.max_ongoing_requests + limits.max_queued_requests + ADMISSION_HEADROOM,
        max_queued_requests=-1,
        ray_actor_options={"num_cpus": limits.ingress_cpus},
    )
    return deployment.bind(coordinators, limits, info or {})


def start(coordinators: list[Any], host: str = "127.0.0.1", port: int | None = None,
          limits: ServeLimits | None = None, info: dict[str, Any] | None = None, name: str = "consensus",
          route_prefix: str | None = None, token: str | None = None) -> str:
    """Deploy the app as ``name`` (Serve's proxy on ``host:port`` if not running yet); returns its base URL.

    See :func:`actors.serve_deploy.deploy` for how names, route prefixes and HTTP options are chosen;
    binding beyond loopback needs ``token`` (:mod:`actors.serve_auth`).
    """
    check_binding(host, token)
    return deploy(build_app(coordinators, limits, info, token), name, host, port, route_prefix)
