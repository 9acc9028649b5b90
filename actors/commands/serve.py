"""``ensemble serve``: an HTTP endpoint (Ray Serve) in front of coordinator and scorer actors."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PRESETS = ("demo",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve consensus runs over HTTP (Ray Serve), on 127.0.0.1 by default")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--spec", type=Path, help="a RunSpec JSON file (generator, scorers, ensemble, consensus)")
    src.add_argument("--preset", choices=PRESETS, default="demo", help="a built-in configuration (default: demo)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; Serve has no auth)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--coordinators", type=int, default=1, help="coordinator actors behind the endpoint")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a private local instance)")
    p.add_argument("--max-ongoing", type=int, default=16, help="concurrent requests per replica")
    p.add_argument("--max-queued", type=int, default=64, help="queued requests before 503")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is cancelled (504)")
    p.set_defaults(func=run)


def preset(name: str):
    """A built-in :class:`~actors.spec.RunSpec`."""
    from actors import spec as S

    if name == "demo":
        return S.RunSpec(
            generator=S.generator("sampling", dim=2, n_candidates=32, rounds=6),
            scorers={"a": S.scorer("quadratic", target=[2.0, 0.0]), "b": S.scorer("quadratic", target=[0.0, 2.0])},
        )
    raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")


def run(args: argparse.Namespace) -> int:
    from ray import serve

    from actors.runtime import RayRuntime, connect
    from actors.serve import start
    from actors.serve_schema import ServeLimits
    from actors.spec import RunSpec

    run_spec = RunSpec.from_dict(json.loads(args.spec.read_text())) if args.spec else preset(args.preset)
    limits = ServeLimits(max_ongoing_requests=args.max_ongoing, max_queued_requests=args.max_queued,
                         request_timeout_s=args.timeout)
    info = connect(args.address)
    runtime = RayRuntime(run_spec, n_coordinators=args.coordinators).start()
    try:
        url = start(runtime.coordinators, args.host, args.port, limits, run_spec.to_dict())
        print(f"serving on {url}  (Ray at {info['address']}); POST {url}/v1/consensus, Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        runtime.shutdown()
        import ray

        ray.shutdown()
    return 0
