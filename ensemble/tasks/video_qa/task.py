"""Video question answering: a causal LM answers a question about a video, guided token by token by CLIPs.

Glue only: the questions (easy-VQA images as one-frame videos, tabletop clips, or an ActivityNet-QA-format
file), the prompt and stop rule handed to the generator, the frames handed to the scorers, the answer
normaliser, and exact-match accuracy (as ActivityNet-QA is scored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ensemble.contracts import Item, Task
from ensemble.tasks.video_qa.data import (
    ANSWER_END_RE,
    QA,
    ClipConfig,
    activitynet_questions,
    easy_vqa_questions,
    exact_match,
    normalise_answer,
    tabletop_questions,
)

SOURCES = ("easyvqa", "tabletop", "activitynet")
SYSTEM_PROMPT = ("Answer the question about the video with one or two words only: yes, no, a color, a shape "
                 "or an object.")
"""Instruction for chat models (the LM never sees the video; the scorers do)."""


def answer_finished(text: str) -> bool:
    """The generator's ``stop_fn``: an answer ends at a line break or punctuation after a word, or after
    four words."""
    stripped = text.strip()
    return bool(stripped) and (bool(ANSWER_END_RE.search(stripped)) or len(stripped.split()) > 4)


class VideoQATask(Task):
    """Questions about videos, exact-match accuracy after normalisation.

    Args:
        source: ``"easyvqa"`` (easy-VQA, one-frame videos), ``"tabletop"`` (clips rendered by the
            simulator) or ``"activitynet"`` (``questions`` + ``videos`` in ActivityNet-QA's format).
        questions: ActivityNet-QA question file (``source="activitynet"``).
        videos: folder of its videos.
        chat: wrap the prompt in the tokenizer's chat template when it has one (``None`` = auto).
    """

    name = "video_qa"
    default_n = 500
    #: A 16 MiB video as base64 (``serve.MAX_UPLOAD_BYTES``) and the JSON around it.
    max_request_bytes = 4 * (16 * 2**20 // 3 + 1) + 65536

    def __init__(self, source: str = "easyvqa", questions: str | None = None, videos: str | None = None,
                 chat: bool | None = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"source={source!r} must be one of {', '.join(SOURCES)}")
        if source == "activitynet" and not (questions and videos):
            raise ValueError("source='activitynet' needs questions=<question JSON> and videos=<folder of videos>")
        self.source, self.questions, self.videos, self.chat = source, questions, videos, chat

    def spec(self) -> dict[str, Any]:
        """The task's settings (part of an evaluation's config hash)."""
        return {"name": self.name, "source": self.source, "questions": self.questions, "videos": self.videos,
                "chat": self.chat}

    # -- data -------------------------------------------------------------------------------------------------
    def qas(self, n: int, seed: int, split: str = "test") -> list[QA]:
        """``n`` questions of ``split`` (``"train"`` for training and choosing settings)."""
        if self.source == "easyvqa":
            return easy_vqa_questions(n, seed, split)
        if self.source == "tabletop":
            return tabletop_questions(n, seed, split, ClipConfig())
        if split != "test":
            raise ValueError("an ActivityNet-QA file is served as given (split='test'); tune on easyvqa/tabletop train")
        return activitynet_questions(self.questions, self.videos, n)

    def items(self, n: int, seed: int, split: str = "test") -> list[Item]:
        """Items whose context is ``{"question", "video"}`` (a path, or frames ``[T, H, W, 3]``) and target the answer."""
        return [Item(qa.id, {"question": qa.question, "video": qa.video}, qa.answer, {**qa.meta, "index": i})
                for i, qa in enumerate(self.qas(n, seed, split))]

    # -- generation hooks -------------------------------------------------------------------------------------
    def prompt(self, context: Any, tokenizer: Any = None, answer_prefix: str = "") -> str:
        """The LM's prompt: the question (in a chat with a one-line instruction when the tokenizer has a
        template), then ``answer_prefix`` as the start of the LM's own turn (e.g. ``"Answer:"``, so the first
        generated token is the answer word, with its leading space). Without a chat template the prompt is
        ``instruction / Question: … / <answer_prefix or "Answer:">``."""
        question = context["question"] if isinstance(context, dict) else str(context)
        question = question[:1].upper() + question[1:]
        use_chat = self.chat if self.chat is not None else bool(getattr(tokenizer, "chat_template", None))
        if use_chat and tokenizer is not None:
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + answer_prefix
        return f"{SYSTEM_PROMPT}\nQuestion: {question}\n{answer_prefix or 'Answer:'}"

    def generator_hooks(self, tokenizer: Any = None, answer_prefix: str = "") -> dict[str, Callable]:
        """``prompt_fn`` and ``stop_fn`` for a CausalLMGenerator."""
        return {"prompt_fn": lambda context: self.prompt(context, tokenizer, answer_prefix), "stop_fn": answer_finished}

    # -- answer and metric -------------------------------------------------------------------------------------
    def answer(self, output: Any, item: Item) -> str:
        """The normalised answer (first line, lower case, no articles or punctuation, synonyms mapped)."""
        return normalise_answer(output)

    def metric(self, answer: Any, item: Item) -> float:
        """Exact match of the normalised answer with the normalised target (1.0 or 0.0)."""
        return exact_match(answer, item.target)

    # -- evaluation and Serve ------------------------------------------------------------------------------------
    def settings_for(self, tiny: bool = False) -> dict[str, Any]:
        """Default :class:`~ensemble.tasks.video_qa.solver.VideoQASpec` fields; ``tiny``: tiny-causal-lm and two
        tiny-clip scorers (mean and max over frames), short answers."""
        if not tiny:
            return {}
        return {"lm": "tiny-causal-lm", "clips": {"clip_mean": {"model": "tiny-clip"},
                                                  "clip_max": {"model": "tiny-clip", "aggregate": "max"}},
                "token": {"max_new_tokens": 3, "top_k": 4, "steps_per_token": 1}, "beams": (1, 2), "frames": 2}

    def build_solver(self, settings: dict[str, Any] | None = None) -> Any:
        """A :class:`~ensemble.tasks.video_qa.solver.VideoQASolver` for ``settings`` (models load on the first solve)."""
        from ensemble.tasks.video_qa.solver import VideoQASolver, VideoQASpec

        return VideoQASolver(VideoQASpec(**dict(settings or {})), task=self)

    def table(self, rows: list[dict[str, Any]], systems: list[str]) -> str:
        """Accuracy ± 95 % interval per system, questions won / lost against the LM alone, speed."""
        from ensemble.tasks.video_qa.solver import video_qa_table

        return video_qa_table(rows, systems)

    def request_model(self) -> Any:
        """``POST /v1/video_qa``: ``{"question", "video_base64", "system", "seed"}``."""
        from ensemble.tasks.video_qa.serve import VideoQARequest

        return VideoQARequest

    def request_item(self, request: Any) -> tuple[Item, str, int]:
        """The item of a served question: the uploaded video's bytes (decoded and capped by the solver)."""
        from ensemble.tasks.video_qa.serve import request_video

        return (Item("request", {"question": request.question, "video": request_video(request)}, None, {}),
                request.system, request.seed)

    def response(self, row: dict[str, Any]) -> dict[str, Any]:
        """Answer, rounds, and the tokens each scorer moved."""
        from ensemble.tasks.video_qa.serve import video_qa_response

        return video_qa_response(row)

    def text_request(self, prompt: str, system: str | None, seed: int, media: tuple[bytes, ...] = ()) -> Any:
        """The request of a chat message: its text is the question, its one attached image or video the video."""
        import base64

        from ensemble.tasks.video_qa.serve import VideoQARequest

        if len(media) != 1:
            raise ValueError(f"attach exactly one video (or image) to the question as an image_url or video_url "
                             f"content part with a data: URL; got {len(media)}")
        fields = {"question": prompt, "video_base64": base64.b64encode(media[0]).decode(), "seed": seed}
        return VideoQARequest(**fields | ({"system": system} if system else {}))

    def response_text(self, response: dict[str, Any]) -> str:
        """The answer as the LM wrote it."""
        return response["output"]
