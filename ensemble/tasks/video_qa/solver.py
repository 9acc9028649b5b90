"""The video QA solver: named systems over one LM and its video CLIP scorers, one question per call.

A *system* is ``"<base>@<beam>"``: the base is ``"lm"`` (the LM alone, blind: same prompt and beam
search, no video), a CLIP's name (the LM guided token by token by that one CLIP over the frames), or
``"ensemble"`` (by all CLIPs, their scores summed). Two guidance modes share the scorers:

* ``"zerocap"`` (the paper's): per token, the CLIPs rate the LM's top-k next words; the key/value
  context takes gradient steps toward their consensus distribution (``CausalLMGenerator``'s token rule);
* ``"magic"`` (MAGIC-style): no context gradient — one scored round per token, and the committed token
  is the argmax of the LM's log-probability + ``rerank_weight`` × the ensemble's (normalised) rating.

A :class:`VideoQASpec` is the solver's small picklable settings; :class:`VideoQASolver` builds the LM and
the CLIPs from it where it runs and solves one item per call into a row of the one format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble.contracts import Item, make_row
from ensemble.eval.beams import ENSEMBLE, LM_ALONE, beam_table_paired
from ensemble.eval.guided_lm import GuidedLMSolver
from ensemble.results import config_hash

MODES = ("zerocap", "magic")
COMBINES = ("mean", "sum", "zscore")
DEFAULT_CLIPS: dict[str, dict[str, Any]] = {
    "clip_vit": {"model": "video_qa/clip-vit", "motion": True, "answer_end": True},
    "clip_vit4": {"model": "video_qa/clip-vit4", "motion": True, "answer_end": True},
    "clip_lit": {"model": "video_qa/clip-lit", "motion": True, "answer_end": True},
}
"""The three CLIPs trained by ``ensemble train video-clips``: ViT patch 8 and ViT patch 4 image towers trained from
scratch, and the LiT CLIP over frozen pre-trained towers (EfficientNet-Lite0, MiniLM), added in round 4 because
its errors differ from the ViTs' (README, train-split choice); the ResNet tower, ``--video-clips resnet``, stayed
weak on the tabletop clips and is left out."""
GUIDANCE_KNOBS = frozenset({"top_k", "min_p", "steps_per_token", "step_size", "temperature", "target_prior",
                            "fluency_weight", "fusion", "keep_shift", "skip_confident", "rerank_weight",
                            "select_final", "select_weight", "lm_ends", "end_margin"})
"""TokenConfig fields that act only through the scorers (left out of the LM-alone config hash)."""
DEFAULT_TOKEN: dict[str, Any] = {"top_k": 64, "steps_per_token": 1, "max_new_tokens": 3, "temperature": 1.0,
                                 "lm_ends": True}
"""The token rule's defaults, chosen on train-split questions (README, "Video question answering")."""
SOURCE_TOKEN: dict[str, dict[str, Any]] = {"tabletop": {"top_k": 512, "end_margin": 0.0}}
"""Token-rule defaults of one question source, over :data:`DEFAULT_TOKEN` (``--top-k`` / ``--end-margin`` override
them). Tabletop (round 5, chosen on train clips): its answers "which object moved?" are two words whose colour
(green, yellow) and second token (" m" of " mug") rank beyond the LM's top-64, so 512 candidates are rated, as
in ZeroCap; with ``end_margin`` 0 the CLIPs, not only the LM, decide whether the answer goes on after the colour."""
MAGIC_RERANK_WEIGHT = 10.0
"""MAGIC-style weight of the ensemble's z-scored rating against the LM's log-probability (train-split choice
among 1, 3, 10: the best ensemble accuracy averaged over easy-VQA and tabletop)."""
DEFAULT_ANSWER_PREFIX = "Answer:"
"""Start of the LM's turn: the first generated token is the answer word (README: chosen on train questions)."""


@dataclass
class VideoQASpec:
    """What to evaluate; crosses process boundaries, models are built where it runs.

    Attributes:
        lm: causal LM name (registry, project checkpoint, hub or local folder).
        clips: CLIP scorer name → :class:`~ensemble.tasks.video_qa.video_clip.VideoClipScorer` kwargs
            (``model``, ``aggregate``, ``motion`` …); each name is a system, all together the ensemble.
        token: :class:`~ensemble.generators.causal_lm.TokenConfig` overrides (beam size is per system).
        mode: ``"zerocap"`` (context gradient steps) or ``"magic"`` (rerank only, no gradient).
        answer_prefix: text that starts the LM's turn (``"Answer:"``: the answer is the first token).
        frames: ``K``, frames sampled uniformly from each video.
        normalisation: per-scorer normalisation of the ratings before they are summed.
        weights: per-CLIP weights of the ensemble (a missing name weighs 1).
        combine: ``"sum"`` (the paper's): the ensemble's rating is the weighted sum of the CLIPs' normalised
            ratings, which grows with the number of CLIPs; ``"mean"``: their weighted mean, on one CLIP's scale;
            ``"zscore"`` (default, chosen on train questions): the mean z-scored again per round (exactly one
            CLIP's spread), so the rerank weight means the same for one CLIP and for the ensemble.
        beams: beam sizes of the default systems.
        device: torch device.
        threads: torch intra-op threads (``None``: leave as is).
    """

    lm: str = "smollm2-135m-instruct"
    clips: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_CLIPS.items()})
    token: dict[str, Any] = field(default_factory=dict)
    mode: str = "magic"
    answer_prefix: str = DEFAULT_ANSWER_PREFIX
    frames: int = 4
    normalisation: str = "zscore"
    weights: dict[str, float] = field(default_factory=dict)
    combine: str = "zscore"
    beams: tuple[int, ...] = (1, 5)
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} must be one of {', '.join(MODES)}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine={self.combine!r} must be one of {', '.join(COMBINES)}")
        if not self.clips:
            raise ValueError("clips: name at least one CLIP scorer")
        clash = {LM_ALONE, ENSEMBLE} & set(self.clips)
        if clash:
            raise ValueError(f"CLIP names {sorted(clash)} are reserved system names; rename them")
        unknown = sorted(set(self.weights) - set(self.clips))
        if unknown:
            raise ValueError(f"weights name {unknown}, which are not among the clips {sorted(self.clips)}")
        if self.frames < 1:
            raise ValueError(f"frames={self.frames} must be at least 1")
        self.beams = tuple(int(b) for b in self.beams)
        if not self.beams or min(self.beams) < 1:
            raise ValueError(f"beams {self.beams}: beam sizes must be >= 1")

    def bases(self) -> list[str]:
        """The base systems: the LM alone, each CLIP, the ensemble."""
        return [LM_ALONE, *self.clips, ENSEMBLE]

    def systems(self) -> list[str]:
        """The default systems: every base at every beam size of :attr:`beams`."""
        return [f"{base}@{beam}" for beam in self.beams for base in self.bases()]

    def token_config(self) -> dict[str, Any]:
        """TokenConfig overrides of the mode: MAGIC-style is one rated round per token, no gradient step.

        Defaults: :data:`DEFAULT_TOKEN` (chosen on train-split questions), then :attr:`token`."""
        token = {**DEFAULT_TOKEN, **self.token}
        if self.mode == "magic":
            token.update(step_size=0.0, steps_per_token=1, rerank_weight=self.token.get("rerank_weight", MAGIC_RERANK_WEIGHT))
        return token

    def hash(self, system: str, beam: int) -> str:
        """Config hash of one (system, beam): names, settings, project checkpoints' content fingerprints."""
        from ensemble.models import checkpoint_fingerprint

        used = self.clips if system == ENSEMBLE else {k: v for k, v in self.clips.items() if k == system}
        token = self.token_config()
        if system == LM_ALONE:  # knobs of the scorers' influence cannot change the blind LM's output
            token = {k: v for k, v in token.items() if k not in GUIDANCE_KNOBS}
        versions = {"lm": checkpoint_fingerprint(self.lm),
                    **{n: checkpoint_fingerprint(str(kw.get("model", ""))) for n, kw in used.items()}}
        guided = system != LM_ALONE
        return config_hash({"lm": self.lm, "clips": used, "token": token, "versions": versions, "system": system,
                            "beam": beam, "answer_prefix": self.answer_prefix, "mode": self.mode if guided else None,
                            "frames": self.frames if guided else None,
                            "normalisation": self.normalisation if system == ENSEMBLE else None,
                            "weights": dict(sorted(self.weights.items())) if system == ENSEMBLE else None,
                            **({"combine": self.combine} if system == ENSEMBLE and self.combine != "sum" else {})})

    def ensemble_weights(self) -> dict[str, float]:
        """Every CLIP's weight in the ensemble: :attr:`weights` (missing: 1), divided by their total unless
        ``combine="sum"``."""
        weights = {n: float(self.weights.get(n, 1.0)) for n in self.clips}
        if self.combine != "sum":
            total = sum(weights.values())
            if total <= 0:
                raise ValueError(f"weights {self.weights}: combine={self.combine!r} needs a positive total weight")
            weights = {n: w / total for n, w in weights.items()}
        return weights


class VideoQASolver(GuidedLMSolver):
    """Builds the LM and the CLIP scorers from a :class:`VideoQASpec` and answers questions.

    Args:
        spec: the settings.
        task: the :class:`~ensemble.tasks.video_qa.task.VideoQATask` (prompt, answer, metric).
        lm: an already loaded ``(model, tokenizer)`` (tests); else ``spec.lm`` is loaded.
        scorers: already built scorers by name (tests); else built from ``spec.clips``.
    """

    def __init__(self, spec: VideoQASpec, task: Any = None, lm: tuple[Any, Any] | None = None,
                 scorers: dict[str, Any] | None = None) -> None:
        from ensemble.tasks.video_qa.task import VideoQATask

        super().__init__(spec, task or VideoQATask(), lm, scorers)
        self._video: tuple[Any, Any] | None = None

    def ensemble_config(self) -> Any:
        """The spec's combination rule: :meth:`VideoQASpec.ensemble_weights`, and with ``combine="zscore"``
        the ensemble's rating standardised per round."""
        from dataclasses import replace

        return replace(super().ensemble_config(), weights=self.spec.ensemble_weights(),
                       standardise_total=self.spec.combine == "zscore")

    def generator_hooks(self, tokenizer: Any) -> dict[str, Any]:
        """The task's prompt with the spec's answer prefix, and its stop rule."""
        return self.task.generator_hooks(tokenizer, answer_prefix=self.spec.answer_prefix)

    def token_settings(self) -> dict[str, Any]:
        """The mode's token rule (:meth:`VideoQASpec.token_config`)."""
        return self.spec.token_config()

    def build_scorers(self) -> dict[str, Any]:
        """One ``video_clip`` scorer per CLIP of the spec."""
        from ensemble.registry import SCORERS

        return {name: SCORERS.make("video_clip", **{"device": self.spec.device, **kwargs})
                for name, kwargs in self.spec.clips.items()}

    def frames(self, context: dict[str, Any]) -> Any:
        """The video of ``context`` as ``[K, 3, H, W]`` (K = ``spec.frames``, sampled uniformly).

        The last video's frames are kept: the systems of one item read it once, and the scorers, which
        cache the features of the last frames tensor they saw, embed it once."""
        from ensemble.tasks.video_qa.video import read_video

        video = context["video"]
        if self._video is not None:
            last, frames = self._video
            if last is video or (isinstance(video, str | bytes) and isinstance(last, type(video)) and last == video):
                return frames
        frames = read_video(video, k=self.spec.frames)
        self._video = (video, frames)
        return frames

    def solve(self, item: Item, system: str, seed: int = 0, callback: Callable[[Any, Any], Any] | None = None) -> dict[str, Any]:
        """Answer ``item`` with ``system`` (``"<base>@<beam>"``); the result row.

        ``metric`` is exact match after normalisation; ``scorers`` holds per CLIP ``moved``: committed tokens
        where that CLIP's favourite differed from the LM's top token and the committed token followed it.
        ``extras``: ``output``, ``target``, ``base``, ``beam``, ``mode``, ``tokens``, and for guided systems
        ``rounds`` and ``moved_rounds`` (token number, LM's top token, committed token, the CLIPs that moved it).
        The LM alone is blind: the video is never read.
        """
        seen: dict[str, Any] = {}

        def guided_context() -> dict[str, Any]:
            seen["frames"] = self.frames(item.context)
            return {"question": item.context["question"], "frames": seen["frames"]}

        run = self.decode(item, system, seed, guided_context=guided_context, callback=callback)
        extras: dict[str, Any] = {"base": run.base, "beam": run.beam}
        scorers: dict[str, Any] = {}
        if run.result is not None:
            moved = moved_rounds(run.result.rounds)
            extras.update(mode=self.spec.mode, frames=int(seen["frames"].shape[0]), rounds=len(run.result.rounds),
                          moved_rounds=moved)
            scorers = {n: {"moved": sum(n in m["by"] for m in moved)} for n in self.scorer_names(run.base)}
        answer = self.task.answer(run.output, item)
        seconds = run.seconds()
        extras.update(output=run.output, target=item.target, tokens=self.n_tokens(run.output))
        return make_row(item, system, self.config_hash(system), seed, answer, self.task.metric(answer, item),
                        seconds, scorers=scorers, extras=extras)


def moved_rounds(rounds: Sequence[Any]) -> list[dict[str, Any]]:
    """The rounds where the committed token differs from the LM's top token and equals some scorer's favourite:
    ``{"round", "token", "lm_top", "committed", "by": [scorer names]}``."""
    out = []
    for r in rounds:
        info = r.info
        committed = (info.get("committed") or [None])[0]
        if committed is None or "scorer_top" not in info or committed == info.get("lm_top"):
            continue
        by = [n for n, t in info["scorer_top"].items() if t == committed]
        if by:
            out.append({"round": r.round, "token": info.get("n_tokens"), "lm_top": info.get("lm_top"),
                        "committed": committed, "by": by})
    return out


def video_qa_table(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> str:
    """Markdown: per system, questions, accuracy ± 95 % interval, won / lost against the LM alone at the same
    beam, seconds per question; then every guided system against the LM alone and the ensemble against each
    single CLIP (points, 95 % paired-bootstrap interval)."""
    return beam_table_paired(rows, systems, "questions")
