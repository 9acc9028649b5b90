"""Causal LM generator with the token-level consensus rule (ZeroCap mechanism) and beam search.

Per generated token, for every live beam:

1. the LM, run on its key/value context plus a learnable delta, gives the next-token distribution p;
2. the top-k next-token candidates become candidate texts (solution so far + candidate);
3. each scorer rates them; each scorer's normalised ratings become a target distribution
   ``softmax(score / temperature)`` over the k candidates;
4. loss = Σₙ wₙ · CE(targetₙ, p restricted to the k candidates) + fluency · KL(p ‖ p_unshifted);
   the delta takes a normalised gradient step (one round = one such step);
5. after ``steps_per_token`` rounds the shifted and unshifted distributions are fused
   (``p_shift^γ · p_orig^(1−γ)``) and beam search (length-normalised) commits the next token; the
   shifted context is kept, as in ZeroCap.

With several beams and ``select_final``, one last round lets the scorers rate the finished hypotheses
as complete solutions; the output is the best by beam score + ``select_weight`` × their rating.

An optional ``force_fn`` appends forced text after a commit (e.g. a calculator for ``<<a*b=``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

from ensemble.contracts import Generator, Proposal
from ensemble.generators import kv as kvlib

MEMO_SIZE = 64
"""Unshifted forward passes remembered by (prompt, tokens), at most this many ..."""
MEMO_BYTES = 256 * 2**20
"""... and at most this much memory (a 135M LM's context of 500 tokens is ~23 MB)."""


@dataclass
class TokenConfig:
    """Knobs of the token-level consensus rule (ZeroCap's values in brackets)."""

    top_k: int = 16
    """Next-token candidates rated by the scorers per beam per step [512]."""
    min_p: float = 0.0
    """Drop candidates whose LM probability is below ``min_p`` × the top token's (the top token always
    stays), so the scorers choose only among tokens the LM finds plausible — where a small LM is
    unsure, e.g. the digits of a number. 0 keeps all ``top_k``; 1 keeps only the top token (and exact
    ties), so with ``score_results`` the scorers rate result digits only."""
    score_results: bool = False
    """Always let the scorers choose the digits of a result being written after ``=``: where the LM's
    top token continues the number, the ``min_p`` filter is lifted (all ``top_k`` are rated) and no
    token is committed as confident.
    Arithmetic the calculator cannot do (``13 balls * €15/ball = …``) is where a verifier that checks
    it knows better than a small LM, even at digits the LM is sure of. Operands are left to the LM."""
    steps_per_token: int = 3
    """Gradient steps on the context delta per token; each is one scored round [5]."""
    step_size: float = 0.3
    """Size of each normalised gradient step on the key/value delta [0.3]."""
    temperature: float = 1.0
    """Softmax temperature turning a scorer's (normalised) ratings into its target distribution
    [0.01 on raw CLIP similarities; 1.0 suits z-scored ratings]."""
    target_prior: bool = True
    """Multiply each scorer's target by the LM's own top-k distribution (``softmax(log p_k + s/T)``, a
    posterior), so a scorer without a preference pulls nowhere and a small LM is not flattened. False
    gives ZeroCap's target ``softmax(s/T)``."""
    fluency_weight: float = 0.2
    """Weight of KL(p_shifted ‖ p_unshifted), which keeps the text fluent [0.2]."""
    fusion: float = 0.99
    """γ in p_shift^γ · p_orig^(1−γ) when a token is committed [0.99]."""
    keep_shift: bool = False
    """Keep the shifted key/value context after a commit, as ZeroCap does (shifts accumulate over
    tokens). False re-encodes the committed token on the unshifted context: the scorers choose the
    token, but the context stays the LM's own, which keeps a small LM fluent."""
    skip_confident: bool = True
    """Commit a token without asking the scorers when the LM leaves every live beam a single candidate
    (after ``min_p``): a one-candidate target has no gradient, so the round would change nothing but
    cost a scoring call, a forward and a backward. Most tokens of a solution are such tokens."""
    beam_size: int = 1
    """Beams kept (1 = greedy on the fused distribution) [5]."""
    length_penalty: float = 1.0
    """Beam score = sum log p / length**length_penalty."""
    rerank_weight: float = 0.0
    """Optional direct use of the ensemble's last ratings when committing: added (times this weight)
    to the fused log-probability of the rated candidates. 0 = the paper's mechanism only."""
    select_final: bool = False
    """With several beams: once the search is over, the scorers rate the finished hypotheses (complete
    solutions, where whole-solution verifiers are most reliable) in one last round, and the output is
    the best by length-normalised log-probability + ``select_weight`` × the ensemble's rating."""
    select_weight: float = 1.0
    """Weight of the ensemble's (normalised) rating against the beam score in the final selection."""
    token_scorers: tuple[str, ...] = ()
    """Names of the scorers asked in token rounds (empty: all). The others are asked only in the final
    selection round (``select_final``): a division of labour where a verifier of whole solutions does
    not vote on single digits it cannot check. A round that asks nobody leaves the LM's token."""
    lm_ends: bool = False
    """The LM, not the scorers, decides when a solution ends: after the first generated token, where the LM's
    own (unshifted) top token would finish the beam (end-of-text, a stop string, ``stop_fn``), that beam's next
    token is ranked without the scorers' ratings of each token (``rerank_weight``); with several beams the beam
    carries, for all its expansions, the ensemble's rating of the LM's ending token, so beams stay on one
    scale. The scorers choose the words, not whether to add one more: scorers that rate text against an input
    cannot tell a complete answer from a longer one ("yes" against "yes yes")."""
    end_margin: float = float("inf")
    """With ``lm_ends``: the scorers may still continue an answer the LM would end, where the ensemble's rating of
    its favourite continuation (a candidate that does not end the beam) beats its rating of the LM's ending token
    by more than this margin (in the ensemble's rating units, z-scores by default); the beam is then reranked as
    without ``lm_ends``. ``inf``: the LM alone decides that the answer is complete. A finite margin lets the
    scorers decide that a two-word answer ("red mug") goes on after a word the LM would stop at ("red"), while a
    small preference ("yes yes" over "yes") stays overruled."""
    max_new_tokens: int = 256
    """Budget of generated tokens per beam."""
    stop_strings: tuple[str, ...] = ()
    """A beam ends once its text contains any of these."""

    def __post_init__(self) -> None:
        checks = {
            "top_k": self.top_k >= 1,
            "steps_per_token": self.steps_per_token >= 1,
            "step_size": self.step_size >= 0,
            "temperature": self.temperature > 0,
            "fluency_weight": self.fluency_weight >= 0,
            "fusion": 0.0 <= self.fusion <= 1.0,
            "min_p": 0.0 <= self.min_p <= 1.0,
            "beam_size": self.beam_size >= 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "end_margin": self.end_margin >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid TokenConfig value(s) {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}: "
                "top_k, steps_per_token, beam_size, max_new_tokens >= 1; temperature > 0; "
                "step_size, fluency_weight, end_margin >= 0; fusion in [0, 1]; min_p in [0, 1]"
            )
        self.stop_strings = tuple(self.stop_strings)
        self.token_scorers = tuple(self.token_scorers)


@dataclass
class Beam:
    """One hypothesis: generated ids, its context (without ``last``), and its score."""

    ids: list[int]
    past: kvlib.KV
    last: int
    logprob: float = 0.0
    done: bool = False
    delta: kvlib.KV | None = None
    p_orig: torch.Tensor | None = None
    next_past: kvlib.KV | None = None
    prompt: tuple[int, ...] = ()
    """The prompt's token ids (with ``ids``, what the unshifted context is the LM's encoding of)."""

    # ``delta`` None means a zero shift: ``p_orig`` and ``next_past`` (the unshifted context after
    # ``last``) then stand for a forward pass, so the LM alone costs one forward per token.

    def score(self, length_penalty: float) -> float:
        """Length-normalised log-probability."""
        return self.logprob / max(len(self.ids), 1) ** length_penalty


@dataclass
class TokenState:
    """Picklable state of the token rule: live beams, finished beams and the inner step."""

    beams: list[Beam]
    finished: list[Beam] = field(default_factory=list)
    step: int = 0
    n_tokens: int = 0
    commits: list[dict[str, Any]] = field(default_factory=list)
    choice: int | None = None
    """Index into :meth:`CausalLMGenerator.pool` chosen by the final selection round (None: not run)."""


class CausalLMGenerator(Generator):
    """Any transformers causal LM as a token-level consensus generator.

    Args:
        model: a registry/hub/local model name (loaded through ``ensemble.models``) or a loaded model.
        tokenizer: the tokenizer, when ``model`` is an object.
        config: a :class:`TokenConfig`; keyword ``overrides`` replace its fields.
        device: torch device for the model ("cpu", "cuda:0" …).
        dtype: model dtype (default float32; float16/bfloat16 on GPU).
        prompt_fn: context → prompt text (default: ``str(context)``).
        force_fn: solution text → text to force next ("" for none), e.g. a calculator.
        stop_fn: solution text → True when the beam is complete.
        prefix_cache: reuse the previous prompt's key/value context for the prefix a new prompt shares
            with it (the instruction; the whole prompt when several systems answer one item), and remember
            the last :data:`MEMO_SIZE` unshifted next-token distributions by (prompt, tokens), within
            :data:`MEMO_BYTES`.
    """

    update_rule = "token"

    def __init__(
        self,
        model: str | Any = "smollm2-135m-instruct",
        tokenizer: Any = None,
        config: TokenConfig | None = None,
        device: str = "cpu",
        dtype: Any = None,
        prompt_fn: Callable[[Any], str] | None = None,
        force_fn: Callable[[str], str] | None = None,
        stop_fn: Callable[[str], bool] | None = None,
        focus_fn: Callable[[str, str], bool] | None = None,
        prefix_cache: bool = True,
        **overrides: Any,
    ) -> None:
        names = {f.name for f in fields(TokenConfig)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; TokenConfig fields are {sorted(names)}")
        base = config or TokenConfig()
        self.config = TokenConfig(**{**{n: getattr(base, n) for n in names}, **overrides})
        if isinstance(model, str):
            from ensemble.models import load_causal_lm

            model, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        if tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer (tokenizer=...)")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.prompt_fn = prompt_fn or str
        self.force_fn = force_fn
        self.stop_fn = stop_fn
        self.focus_fn = focus_fn
        self.prefix_cache = prefix_cache
        self._prefix: tuple[list[int], kvlib.KV] | None = None
        self._prefix_logits: tuple[torch.Tensor, kvlib.KV] | None = None
        self._prefix_last: tuple[torch.Tensor, kvlib.KV] | None = None
        self._memo: OrderedDict[tuple[tuple[int, ...], tuple[int, ...]], tuple[torch.Tensor, kvlib.KV]] = OrderedDict()
        self._memo_bytes = 0
        if self.config.score_results and focus_fn is None:
            raise ValueError("score_results needs the task's focus_fn hook (text so far, LM's top token) -> bool, "
                             "e.g. the math task's result-digit rule")
        self.eos_id = tokenizer.eos_token_id
        for p in self.model.parameters():
            p.requires_grad_(False)

    # ----------------------------------------------------------------------------- helpers
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text(self, ids: list[int]) -> str:
        """Decode generated ids."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ----------------------------------------------------------------------------- contract
    def init_state(self, context: Any, seed: int) -> TokenState:
        """Encode the prompt; one beam whose context is the prompt minus its last token."""
        torch.manual_seed(seed)
        prompt = self._ids(self.prompt_fn(context))
        if not prompt:
            raise ValueError("the prompt encodes to no tokens")
        beam = Beam(ids=[], past=self._prompt_context(prompt[:-1], prompt[-1]), last=prompt[-1], prompt=tuple(prompt))
        if self.prefix_cache and not self.config.keep_shift and self._prefix_logits is not None:
            # the prompt's last token ran with the rest of it: its distribution and context are known
            beam.p_orig, beam.next_past = self._prefix_logits
            self._remember((beam.prompt, ()), self._prefix_logits)
        self._prepare(beam)
        state = TokenState(beams=[beam])
        self._fast_forward(state)
        return state

    def _prompt_context(self, ids: list[int], last: int) -> kvlib.KV:
        """The key/value context of ``ids`` (the prompt minus its ``last`` token), reusing the last prompt's.

        With ``prefix_cache`` the last token runs in the same pass, and its next-token distribution and the
        context after it are kept in ``_prefix_logits`` (one forward pass per prompt, not two).

        Prompts of one task share their instruction (and the systems of one item share the whole prompt),
        so only the tokens after the longest common prefix with the previous prompt run through the LM
        (``prefix_cache=False``: always the whole prompt). The cached context is never modified in place."""
        self._prefix_logits = None
        if not ids:
            return []
        if not self.prefix_cache:
            with torch.no_grad():
                _, past = kvlib.forward(self.model, torch.tensor([ids], device=self.device), None)
            return kvlib.detach(past)
        full = list(ids) + [last]
        n = len(ids)
        if self._prefix is not None and self._prefix[0] == full and self._prefix_last is not None:
            self._prefix_logits = self._prefix_last  # the same prompt again (another system, same item)
            return [(k[:, :, :n], v[:, :, :n]) for k, v in self._prefix[1]]
        cached_ids, cached = self._prefix or ([], [])
        common = 0
        for a, b in zip(cached_ids, full, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids))  # at least the last token runs, for its distribution
        past = [(k[:, :, :common], v[:, :, :common]) for k, v in cached] if common else None
        with torch.no_grad():
            logits, past = kvlib.forward(self.model, torch.tensor([full[common:]], device=self.device), past)
        past = kvlib.detach(past)
        self._prefix = (full, past)
        self._prefix_logits = self._prefix_last = (F.log_softmax(logits[-1], -1), past)
        return [(k[:, :, :n], v[:, :, :n]) for k, v in past]

    def _prepare(self, beam: Beam) -> None:
        """Zero delta, the unshifted distribution for the beam's next token and the context after it."""
        self._prepare_many([beam])

    @staticmethod
    def _groups(beams: list[Beam]) -> list[list[int]]:
        """Indices of ``beams`` grouped by context length: each group runs as one batch (beams differ
        in length only after forced text), so beam search costs about one forward per token, not one
        per beam."""
        groups: dict[int, list[int]] = {}
        for i, beam in enumerate(beams):
            groups.setdefault(kvlib.length(beam.past), []).append(i)
        return list(groups.values())

    def _forward_beams(self, beams: list[Beam], delta: kvlib.KV | None) -> tuple[torch.Tensor, kvlib.KV]:
        """Logits ``[B, vocab]`` after each beam's ``last`` token on its context (+ a batched ``delta``),
        and the batched extended context; ``beams`` must share one context length."""
        ids = torch.tensor([[beam.last] for beam in beams], device=self.device)
        if not beams[0].past:
            logits, new = kvlib.forward_batch(self.model, ids, None)
            return logits[:, -1], new
        past = beams[0].past if len(beams) == 1 else kvlib.cat([beam.past for beam in beams])
        logits, new = kvlib.forward_batch(self.model, ids, kvlib.add(past, delta) if delta else past)
        return logits[:, -1], new

    def _prepare_many(self, beams: list[Beam]) -> None:
        """:meth:`_prepare` for several beams, batched by context length.

        Without ``keep_shift`` a beam's context is the LM's own encoding of its prompt and tokens, so its
        next-token distribution is remembered by (prompt, tokens) (``prefix_cache``): the systems answering
        one item, and beams that meet again, share these forward passes."""
        memo = self._memo if self.prefix_cache and not self.config.keep_shift else None
        todo = []
        for beam in beams:
            hit = memo.get((beam.prompt, tuple(beam.ids))) if memo is not None and beam.prompt else None
            if hit is None:
                todo.append(beam)
            else:
                memo.move_to_end((beam.prompt, tuple(beam.ids)))
                beam.p_orig, beam.next_past, beam.delta = hit[0], hit[1], None
        for group in self._groups(todo):
            members = [todo[i] for i in group]
            with torch.no_grad():
                logits, new = self._forward_beams(members, None)
            for beam, row, past in zip(members, logits, kvlib.split(new), strict=True):
                beam.p_orig = F.log_softmax(row, -1)
                beam.next_past = kvlib.detach(past)
                beam.delta = None
                if memo is not None and beam.prompt:
                    self._remember((beam.prompt, tuple(beam.ids)), (beam.p_orig, beam.next_past))

    def _remember(self, key: tuple[tuple[int, ...], tuple[int, ...]], value: tuple[torch.Tensor, kvlib.KV]) -> None:
        """Add one forward pass to the memo; the oldest go while it holds more than its count or bytes."""
        def size(entry: tuple[torch.Tensor, kvlib.KV]) -> int:
            return entry[0].nbytes + sum(k.nbytes + v.nbytes for k, v in entry[1])

        if key in self._memo:
            self._memo_bytes -= size(self._memo.pop(key))
        self._memo[key] = value
        self._memo_bytes += size(value)
        while self._memo and (len(self._memo) > MEMO_SIZE or self._memo_bytes > MEMO_BYTES):
            self._memo_bytes -= size(self._memo.popitem(last=False)[1])

    def _shifted(self, beam: Beam) -> tuple[torch.Tensor, kvlib.KV]:
        """Next-token log-probabilities ``[vocab]`` and the extended context, on the shifted context."""
        return self._shifted_many([beam])[0]

    def _shifted_many(self, beams: list[Beam]) -> list[tuple[torch.Tensor, kvlib.KV]]:
        """:meth:`_shifted` for several beams; the shifted ones run batched by context length."""
        out: list[Any] = [(beam.p_orig, beam.next_past) for beam in beams]
        moved = [i for i, beam in enumerate(beams) if beam.delta is not None]
        for group in self._groups([beams[i] for i in moved]):
            members = [beams[moved[i]] for i in group]
            delta = members[0].delta if len(members) == 1 else kvlib.cat([m.delta for m in members])
            with torch.no_grad():
                logits, new = self._forward_beams(members, delta)
            for i, row, past in zip(group, logits, kvlib.split(new), strict=True):
                out[moved[i]] = (F.log_softmax(row, -1), past)
        return out

    def _candidates(self, logits: torch.Tensor, text: str = "") -> list[int]:
        """The top-k next tokens of ``logits`` that pass ``min_p`` (all top-k while a result is written
        with ``score_results``; ``text`` is the beam's solution so far)."""
        values, indices = torch.topk(logits, min(self.config.top_k, logits.numel()))
        if self.config.min_p > 0:
            keep = values >= values[0] + torch.log(torch.tensor(self.config.min_p))
            if not (self.config.score_results and self._in_result(text, int(indices[0]))):
                indices = indices[keep]
        return indices.tolist()

    def _in_result(self, text: str, top: int) -> bool:
        """True while a result is being written after ``=`` and the LM's top token continues its digits
        (once the LM would end the number — ``.``, a line break, a unit — the number is the LM's)."""
        return bool(self.focus_fn(text, self.tokenizer.decode([top])))

    def _fast_forward(self, state: TokenState) -> None:
        """Commit tokens directly while no live beam leaves the scorers a choice (``skip_confident``)."""
        cfg = self.config
        if not cfg.skip_confident:
            return
        if cfg.beam_size != 1:
            empty = torch.zeros(0, dtype=torch.long)
            while state.beams and not self._search_done(state) and all(
                beam.delta is None and len(self._candidates(beam.p_orig, self._result_text(beam))) == 1
                for beam in state.beams
            ):
                self._commit(state, empty, empty, torch.zeros(0), follow=False)
                state.commits[-1]["confident"] = True
            return
        while len(state.beams) == 1 and state.beams[0].delta is None:
            beam = state.beams[0]
            top = self._candidates(beam.p_orig, self._result_text(beam))
            if len(top) != 1:
                return
            tok = top[0]
            new = Beam(ids=beam.ids + [tok], past=beam.next_past, last=tok, logprob=beam.logprob + float(beam.p_orig[tok]),
                       prompt=beam.prompt)
            self._force(new)
            new.done = self._finished(new)
            state.n_tokens += 1
            state.commits.append({"tokens": [self.tokenizer.decode([tok])], "confident": True})
            if new.done:
                state.finished.append(new)
                state.beams = []
                return
            self._prepare(new)
            state.beams = [new]

    def _result_text(self, beam: Beam) -> str:
        """The beam's solution text when ``score_results`` needs it for :meth:`_candidates`, else ""."""
        return self.text(beam.ids) if self.config.score_results else ""

    def pool(self, state: TokenState) -> list[Beam]:
        """The hypotheses an output is chosen from: the finished beams, or the live ones if none finished."""
        return state.finished or state.beams

    def _selecting(self, state: TokenState) -> bool:
        """True when the search is over and the final selection round is still due."""
        return (self.config.select_final and self.config.beam_size > 1 and state.choice is None
                and len(self.pool(state)) > 1 and self._search_done(state))

    def propose(self, state: TokenState, context: Any) -> Proposal:
        """Top-k next tokens of every live beam on its shifted context, as candidate texts; once the
        search is over (``select_final``), the finished hypotheses as complete texts."""
        if self._selecting(state):
            texts = [self.text(beam.ids) for beam in self.pool(state)]
            return Proposal(candidates=texts, info={"final": True})
        texts, beam_idx, token_ids = [], [], []
        for b, (beam, (logits, _)) in enumerate(zip(state.beams, self._shifted_many(state.beams), strict=True)):
            top = self._candidates(logits, self._result_text(beam))
            for tok in top:
                texts.append(self.text(beam.ids + [tok]))
                beam_idx.append(b)
                token_ids.append(tok)
        return Proposal(candidates=texts, info={"beam": beam_idx, "token": token_ids},
                        scorers=self.config.token_scorers or None)

    def refine(self, state: TokenState, proposal: Proposal, feedback: Any) -> TokenState:
        """One gradient step on each beam's context delta; commit a token after the last step. In the
        final selection round: choose the output among the finished hypotheses."""
        if proposal.info.get("final"):
            lp = self.config.length_penalty
            ranked = [beam.score(lp) + self.config.select_weight * float(t)
                      for beam, t in zip(self.pool(state), feedback.total, strict=True)]
            state.choice = max(range(len(ranked)), key=ranked.__getitem__)
            return state
        beam_idx = torch.tensor(proposal.info["beam"])
        tokens = torch.tensor(proposal.info["token"])
        rows = [(beam_idx == b).nonzero().flatten() for b in range(len(state.beams))]
        if feedback.normalised:  # nobody asked (token_scorers): no target, no step
            self._delta_steps(state.beams, [tokens[r] for r in rows],
                              [{n: s[r] for n, s in feedback.normalised.items()} for r in rows], feedback.weights)
        state.step += 1
        if state.step >= self.config.steps_per_token:
            self._commit(state, tokens, beam_idx, feedback.total)
            state.step = 0
        return state

    def _delta_steps(self, beams: list[Beam], cands: list[torch.Tensor], scores: list[dict[str, torch.Tensor]],
                     weights: dict) -> None:
        """One normalised gradient step on every beam's context delta, batched by context length.

        Each beam's loss is Σₙ wₙ·CE(targetₙ, p_k) + fluency·KL(p ‖ p_orig); the losses are summed, so
        each beam's slice of the batched gradient is its own gradient, normalised on its own.
        """
        cfg = self.config
        if cfg.step_size == 0:
            return
        for group in self._groups(beams):
            members = [beams[i] for i in group]
            if not members[0].past:
                continue
            base = kvlib.cat([m.delta if m.delta is not None else kvlib.zeros_like(m.past) for m in members])
            delta = [(dk.detach().requires_grad_(True), dv.detach().requires_grad_(True)) for dk, dv in base]
            logits, _ = self._forward_beams(members, delta)
            loss = torch.zeros((), device=logits.device)
            for row, i in zip(logits, group, strict=True):
                loss = loss + self._beam_loss(row, beams[i], cands[i], scores[i], weights)
            flat = [t for pair in delta for t in pair]
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
            stepped = []
            for t, g in zip(flat, grads, strict=True):
                if g is None:
                    stepped.append(t.detach())
                    continue
                norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
                stepped.append((t - cfg.step_size * g / (norm + 1e-10)).detach())
            batched = [(stepped[i], stepped[i + 1]) for i in range(0, len(stepped), 2)]
            for member, own in zip(members, kvlib.split(batched), strict=True):
                member.delta = own

    def _beam_loss(self, logits: torch.Tensor, beam: Beam, cand: torch.Tensor, scores: dict[str, torch.Tensor],
                   weights: dict) -> torch.Tensor:
        """The token rule's loss for one beam: scorer targets over its candidates plus fluency."""
        cfg = self.config
        logp = F.log_softmax(logits, -1)
        logp_k = F.log_softmax(logits[cand.to(self.device)], -1)
        loss = torch.zeros((), device=logits.device)
        prior = logp_k.detach() if cfg.target_prior else torch.zeros_like(logp_k)
        for name, s in scores.items():
            target = F.softmax(prior + s.to(logits.device) / cfg.temperature, -1)
            loss = loss + weights[name] * -(target * logp_k).sum()
        return loss + cfg.fluency_weight * (logp.exp() * (logp - beam.p_orig)).sum()

    def _commit(self, state: TokenState, tokens: torch.Tensor, beam_idx: torch.Tensor, total: torch.Tensor,
                follow: bool = True) -> None:
        """Expand every live beam by its best tokens on the fused distribution and keep the best
        ``beam_size`` expansions (``follow``: then fast-forward through confident tokens)."""
        cfg = self.config
        expansions = []  # (score, logprob, beam index, token, new context)
        for b, (beam, (shifted, new_past)) in enumerate(zip(state.beams, self._shifted_many(state.beams), strict=True)):
            if not cfg.keep_shift:
                new_past = beam.next_past
            fused = cfg.fusion * shifted + (1 - cfg.fusion) * beam.p_orig
            fused = F.log_softmax(fused, -1)
            ranking = fused.clone()
            rows = (beam_idx == b).nonzero().flatten()
            lm_top = int(beam.p_orig.argmax()) if cfg.rerank_weight and cfg.lm_ends and beam.ids else None
            if lm_top is not None and self._ends(beam, lm_top) and not self._scorers_continue(beam, lm_top, tokens[rows], total[rows]):
                # The LM ends this answer: its tokens keep the LM's order, and the beam carries the ensemble's
                # rating of that ending (the answer as it is), so it stays comparable with reranked beams.
                hit = (tokens[rows] == lm_top).nonzero().flatten()
                if len(hit):
                    ranking += cfg.rerank_weight * float(total[rows][hit[0]])
            elif cfg.rerank_weight:
                ranking[tokens[rows].to(ranking.device)] += cfg.rerank_weight * total[rows].to(ranking.device)
            for tok in torch.topk(ranking, cfg.beam_size).indices.tolist():
                lp = beam.logprob + float(fused[tok])
                n = len(beam.ids) + 1
                rank = (lp + cfg.rerank_weight * float(ranking[tok] - fused[tok])) / n**cfg.length_penalty
                expansions.append((rank, lp, b, tok, new_past))
        expansions.sort(key=lambda e: e[0], reverse=True)
        survivors: list[Beam] = []
        for _, lp, b, tok, new_past in expansions[: cfg.beam_size]:
            parent = state.beams[b]
            beam = Beam(ids=parent.ids + [tok], past=kvlib.detach(new_past), last=tok, logprob=lp, prompt=parent.prompt)
            self._force(beam)
            beam.done = self._finished(beam)
            if beam.done:
                state.finished.append(beam)
            else:
                survivors.append(beam)
        self._prepare_many(survivors)
        state.commits.append({"tokens": [self.tokenizer.decode([e[3]]) for e in expansions[: cfg.beam_size]]})
        state.beams = survivors
        state.n_tokens += 1
        # Keep only as many finished beams as could still win.
        state.finished.sort(key=lambda x: x.score(cfg.length_penalty), reverse=True)
        del state.finished[cfg.beam_size :]
        if follow:
            self._fast_forward(state)

    def _scorers_continue(self, beam: Beam, end: int, tokens: torch.Tensor, total: torch.Tensor) -> bool:
        """True when the scorers overrule the LM's ending token ``end`` (``end_margin``): their best rating of a
        candidate among ``tokens`` that does not end ``beam`` exceeds their rating of ``end`` by more than the margin."""
        margin = self.config.end_margin
        hit = (tokens == end).nonzero().flatten()
        if margin == float("inf") or not len(hit):
            return False
        go_on = [i for i, tok in enumerate(tokens.tolist()) if not self._ends(beam, tok)]
        return bool(go_on) and float(total[go_on].max()) > float(total[hit[0]]) + margin

    def _force(self, beam: Beam) -> None:
        if self.force_fn is None or beam.last == self.eos_id:
            return
        for _ in range(3):  # forced text may itself call for more (e.g. an opened annotation)
            forced = self.force_fn(self.text(beam.ids))
            ids = self._ids(forced) if forced else []
            if not ids:
                return
            with torch.no_grad():
                _, past = kvlib.forward(self.model, torch.tensor([[beam.last] + ids[:-1]], device=self.device), beam.past)
            beam.past, beam.last, beam.ids = kvlib.detach(past), ids[-1], beam.ids + ids

    def _ends(self, beam: Beam, tok: int) -> bool:
        """True when ``tok`` would finish ``beam`` (end-of-text, a stop string, ``stop_fn``; not the token budget)."""
        return tok == self.eos_id or self._text_stops(beam.ids + [tok])

    def _text_stops(self, ids: list[int]) -> bool:
        """True when the decoded ``ids`` hold a stop string or satisfy ``stop_fn``."""
        text = self.text(ids)
        return any(s in text for s in self.config.stop_strings) or bool(self.stop_fn and self.stop_fn(text))

    def _finished(self, beam: Beam) -> bool:
        return beam.last == self.eos_id or len(beam.ids) >= self.config.max_new_tokens or self._text_stops(beam.ids)

    def is_done(self, state: TokenState) -> bool:
        """Done when the search is over (:meth:`_search_done`) and no final selection round is due."""
        return self._search_done(state) and not self._selecting(state)

    def _search_done(self, state: TokenState) -> bool:
        """Beam search is over when no beam is live, or the best finished beam beats every live one."""
        if not state.beams:
            return True
        if len(state.finished) >= self.config.beam_size:
            lp = self.config.length_penalty
            worst_finished = min(b.score(lp) for b in state.finished)
            # The usual beam-search heuristic: stop once no live beam currently scores better.
            return all(b.score(lp) < worst_finished for b in state.beams)
        return False

    def output(self, state: TokenState) -> str:
        """Text of the chosen hypothesis (final selection) or of the best beam (finished ones first)."""
        pool = self.pool(state)
        return self.text(pool[state.choice if state.choice is not None else self._lm_best(pool)].ids)

    def _lm_best(self, pool: list[Beam]) -> int:
        """Index of the beam with the best length-normalised log-probability (the LM's own pick)."""
        return max(range(len(pool)), key=lambda i: pool[i].score(self.config.length_penalty))

    def describe(self, state: TokenState, proposal: Proposal, feedback: Any) -> dict[str, Any]:
        """Which token the LM, the ensemble and each scorer preferred; what was committed."""
        if proposal.info.get("final"):
            return {"final": True, "chosen": state.choice, "lm_choice": self._lm_best(self.pool(state)),
                    "n_tokens": state.n_tokens,
                    "scorer_top": {n: int(torch.argmax(s)) for n, s in feedback.scores.items()}}
        tokens = proposal.info["token"]
        beams = proposal.info["beam"]
        first = [i for i, b in enumerate(beams) if b == 0]
        dec = self.tokenizer.decode
        info: dict[str, Any] = {"step": (state.step - 1) % self.config.steps_per_token, "n_tokens": state.n_tokens}
        if first:
            sl = slice(first[0], first[-1] + 1)
            info["lm_top"] = dec([tokens[first[0]]])
            info["ensemble_top"] = dec([tokens[sl.start + int(torch.argmax(feedback.total[sl]))]])
            info["scorer_top"] = {n: dec([tokens[sl.start + int(torch.argmax(s[sl]))]]) for n, s in feedback.scores.items()}
        if state.step == 0 and state.commits:
            scored = next((c for c in reversed(state.commits) if not c.get("confident")), None)
            if scored is not None:
                info["committed"] = scored["tokens"]
        return info

    # ----------------------------------------------------------------------------- baseline
    def generate_plain(self, context: Any, seed: int = 0) -> str:
        """The LM alone with the same beam search and hooks, no scorers (the baseline)."""
        state = self.init_state(context, seed)
        dummy = torch.zeros(0)
        while not self._search_done(state):
            self._commit(state, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), dummy)
        return self.output(state)
