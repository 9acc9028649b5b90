"""The image solver: named systems (generator alone, + CLIP, + classifier, + CFG, all), one image set per call.

Every system starts item ``i`` from the same initial noise (the one per-item seed rule), so the
systems are compared on paired samples. The models load once, on the first call.
"""

from __future__ import annotations

import base64
import time
from dataclasses import asdict
from typing import Any

from ensemble.contracts import Item, Solver, Task, make_row
from ensemble.eval.seeds import run_seed
from ensemble.eval.table import markdown_table, mean_ci
from ensemble.results import config_hash

DEFAULT_MODELS = {"unet": "image/shapes-unet", "clip": "image/shapes-clip", "classifier": "image/shapes-classifier"}
"""The models ``ensemble train image-models`` trains (the evaluation classifier is the task's)."""

LABELS = {"alone": "diffusion alone", "clip": "+ CLIP", "cls": "+ classifier", "cfg": "+ classifier-free guidance",
          "all": "+ CLIP + classifier + CFG"}


class ImageSolver(Solver):
    """Generates the images of one item with one system.

    Args:
        task: the image task (its independent evaluation classifier scores the result).
        settings: ``unet``, ``clip``, ``classifier`` model names, ``device``, ``threads`` and the
            :class:`~ensemble.tasks.image.task.SamplerSettings` fields.
    """

    def __init__(self, task: Task, settings: dict[str, Any]) -> None:
        from ensemble.tasks.image.task import STANDARD_CONFIGS, SamplerSettings

        settings = dict(settings)
        self.task = task
        self.models = {k: settings.pop(k, v) for k, v in DEFAULT_MODELS.items()}
        self.device = settings.pop("device", "cpu")
        self.threads = settings.pop("threads", None)
        self.sampler = SamplerSettings(**settings)
        self.configs = STANDARD_CONFIGS
        self._shared: Any = None
        self._built: dict[str, tuple[Any, Any]] = {}

    def systems(self) -> list[str]:
        return list(self.configs)

    def config_hash(self, system: str) -> str:
        self.check_systems([system])
        return config_hash({"task": self.task.spec(), "config": asdict(self.configs[system]),
                            "settings": self.sampler.to_dict(), **self.models})

    def _system(self, system: str) -> tuple[Any, Any]:
        if system not in self._built:
            from ensemble.models import load_diffusion
            from ensemble.tasks.image.task import build_scorers, build_system

            if self._shared is None:
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                diffusion = load_diffusion(self.models["unet"], device=self.device)
                scorers = build_scorers(self.models["clip"], self.models["classifier"], self.sampler, device=self.device)
                self._shared = (diffusion, scorers)
            self._built[system] = build_system(self.configs[system], *self._shared, self.sampler, device=self.device)
        return self._built[system]

    def solve(self, item: Item, system: str, seed: int = 0, callback: Any = None) -> dict[str, Any]:
        """Generate; ``metric`` is the evaluation classifier's accuracy on the images; ``answer`` its
        predicted class of the first image; ``scorers``: each scorer's energy of the final x̂₀;
        ``extras``: the label and the images (8-bit, base64) for set-level metrics."""
        from ensemble.config import ConsensusConfig
        from ensemble.consensus import run_consensus

        self.check_systems([system])
        generator, ensemble = self._system(system)
        t0 = time.perf_counter()
        res = run_consensus(generator, ensemble, item.context, ConsensusConfig(seed=run_seed(seed, item)),
                            callback=callback)
        images = self.task.answer(res.output, item)
        metric = self.task.metric(images, item)
        predicted = int(self.task.classify(images[:1])[1].argmax(-1)[0]) if images is not None else None
        last = res.rounds[-1]
        scorers = {n: {"energy": float(e)} for n, e in last.scorer_mean_energy.items()}
        extras = {"label": item.target, "images": [encode_image(im) for im in images] if images is not None else []}
        return make_row(item, system, self.config_hash(system), seed, predicted, metric,
                        time.perf_counter() - t0, scorers=scorers, extras=extras)


def encode_image(image: Any) -> dict[str, Any]:
    """``[3, S, S]`` in ``[-1, 1]`` → ``{"shape", "uint8_b64"}`` (JSON-ready, lossless at 8 bits)."""
    data = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return {"shape": list(data.shape), "uint8_b64": base64.b64encode(data.numpy().tobytes()).decode()}


def decode_image(blob: dict[str, Any]) -> Any:
    """Inverse of :func:`encode_image`: a float tensor in ``[-1, 1]``."""
    import numpy as np
    import torch

    raw = np.frombuffer(base64.b64decode(blob["uint8_b64"]), dtype=np.uint8).reshape(blob["shape"])
    return torch.from_numpy(raw.copy()).float() / 127.5 - 1.0


def image_table(task: Any, rows: list[dict[str, Any]], systems: list[str]) -> str:
    """One line per system: accuracy ± 95 % interval, the set's FID-/KID-/IS-like, energies, seconds."""
    import torch

    out = []
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        if len(mine) < 2:
            continue
        images = torch.stack([decode_image(b) for r in mine for b in r["extras"]["images"]])
        labels = [r["extras"]["label"] for r in mine for _ in r["extras"]["images"]]
        m = task.set_metrics(images, labels)
        mean, half = mean_ci([r["metric"] for r in mine])
        n = len(mine)
        energy = {name: sum(r["scorers"].get(name, {}).get("energy", float("nan")) for r in mine) / n
                  for name in ("clip", "classifier")}
        out.append([f"{LABELS.get(system, system)} ({system})", n, f"{100 * mean:.1f} ± {100 * half:.1f}", m["fid"], m["kid"], m["is"],
                    energy["clip"], energy["classifier"], sum(r["timings"]["seconds"] for r in mine) / n])
    return markdown_table(["system", "images", "eval-classifier accuracy % (95 % CI)", "FID-like ↓", "KID-like ×100 ↓",
                           "IS-like ↑", "CLIP energy ↓", "classifier energy ↓", "s / image"], out)
