"""Ray Serve endpoint: validated HTTP requests → coordinator actors → scorer actors.

``POST /v1/consensus`` runs one consensus loop and answers with the output and every round record
(attribution included); with ``"stream": true`` it streams one JSON line per round as the rounds end
(NDJSON), then the result. ``GET /healthz`` reports the coordinators; ``GET /v1/info`` the
configuration. Bound to 127.0.0.1 unless told otherwise. Serve endpoints are not covered by the Ray
token: put an authenticating proxy in front before binding to another address.
"""



import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from ray import serve

from actors.coordinator import jsonable
from actors.serve_deploy import deploy
from actors.serve_schema import ConsensusRequest, ServeLimits, check_size
from ensemble.consensus import ConsensusResult, RoundRecord

api = FastAPI(title="iterative-consensus", description="Composing pre-trained models by iterative consensus")


def result_json(result: ConsensusResult) -> dict[str, Any]:
    """A consensus result as plain JSON."""
    return {
        "output": jsonable(result.output),
        "stop_reason": result.stop_reason,
        "n_candidates": result.n_candidates,
        "duration_s": result.duration_s,
        "rounds": [r.to_dict() for r in result.rounds],
    }


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

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Every coordinator's health."""
        return {"coordinators": [await c.health.remote() for c in self.coordinators]}

    @api.get("/v1/info")
    async def describe(self) -> dict[str, Any]:
        """The served configuration and limits."""
        return {"run": self.info, "limits": self.limits.__dict__}

    @api.post("/v1/consensus")
    async def consensus(self, request: ConsensusRequest) -> Any:
        """Run one consensus loop (or stream its rounds)."""
        reason = check_size(request, self.limits)
        if reason:
            raise HTTPException(status_code=413, detail=reason)
        coordinator = self.coordinators[next(self._next)]
        if request.stream:
            return StreamingResponse(self._stream(coordinator, request), media_type="application/x-ndjson")
        ref = coordinator.run.remote(request.context, request.seed)
        try:
            result = await asyncio.wait_for(ref, self.limits.request_timeout_s)
        except TimeoutError:
            ray.cancel(ref)  # cancels the loop and its in-flight scorer calls
            raise HTTPException(status_code=504, detail=f"the run exceeded {self.limits.request_timeout_s} s") from None
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None
        return result_json(result)

    async def _stream(self, coordinator: Any, request: ConsensusRequest) -> AsyncIterator[str]:
        refs = coordinator.stream.options(num_returns="streaming").remote(request.context, request.seed)
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                async for ref in refs:
                    item = await ref
                    if isinstance(item, RoundRecord):
                        yield json.dumps({"round": item.to_dict()}) + "\n"
                    else:
                        yield json.dumps({"result": result_json(item)}) + "\n"
        except TimeoutError:
            yield json.dumps({"error": f"the run exceeded {self.limits.request_timeout_s} s"}) + "\n"
        except Exception as err:  # noqa: BLE001 - report to the client, the stream has begun
            yield json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n"


def build_app(coordinators: list[Any], limits: ServeLimits | None = None, info: dict[str, Any] | None = None) -> Any:
    """The Serve application for ``serve.run``."""
    limits = limits or ServeLimits()
    deployment = ConsensusIngress.options(
        max_ongoing_requests=limits.max_ongoing_requests, max_queued_requests=limits.max_queued_requests,
        ray_actor_options={"num_cpus": limits.ingress_cpus},
    )
    return deployment.bind(coordinators, limits, info or {})


def start(coordinators: list[Any], host: str = "127.0.0.1", port: int | None = None,
          limits: ServeLimits | None = None, info: dict[str, Any] | None = None, name: str = "consensus",
          route_prefix: str | None = None) -> str:
    """Deploy the app as ``name`` (Serve's proxy on ``host:port`` if not running yet); returns its base URL.

    See :func:`actors.serve_deploy.deploy` for how names, route prefixes and HTTP options are chosen.
    """
    return deploy(build_app(coordinators, limits, info), name, host, port, route_prefix)
