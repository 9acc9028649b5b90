"""Unit tier: each update rule end to end on tiny real models, with behavioural assertions."""

from __future__ import annotations

import torch

from ensemble import SCORERS, ConsensusConfig, EnsembleConfig, Proposal, ScoreOutput, Scorer
from ensemble.aggregate import ScorerEnsemble
from ensemble.consensus import run_consensus
from ensemble.generators.causal_lm import CausalLMGenerator
from ensemble.generators.gradient import GradientGenerator


class PrefersToken(Scorer):
    """Test scorer (loop logic only): rates candidate texts by whether they end with ``suffix``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def score(self, context, candidates, *, need_grad=False):
        return ScoreOutput(scores=torch.tensor([5.0 if c.endswith(self.suffix) else 0.0 for c in candidates]))


def _next_token_probs(gen: CausalLMGenerator, state) -> torch.Tensor:
    return gen._shifted(state.beams[0])[0].exp()


def test_token_rule_shifts_next_token_distribution_toward_scorer_targets():
    gen = CausalLMGenerator("tiny-causal-lm", top_k=8, steps_per_token=4, step_size=1.0, fluency_weight=0.0,
                            max_new_tokens=3)
    context = "Tom has 3 apples and buys 2 more."
    state = gen.init_state(context, seed=0)
    before = _next_token_probs(gen, state)
    proposal = gen.propose(state, context)
    target = proposal.info["token"][6]  # the LM's 7th choice
    scorer = PrefersToken(gen.text(state.beams[0].ids + [target]))
    assert sum(c.endswith(scorer.suffix) for c in proposal.candidates) == 1
    ensemble = ScorerEnsemble({"prefers": scorer})
    for _ in range(3):  # three of the four steps: the token is not committed yet
        proposal = gen.propose(state, context)
        state = gen.refine(state, proposal, ensemble.score(context, proposal))
    after = _next_token_probs(gen, state)
    assert after[target] > 1.1 * before[target]
    # The scorer's token climbed from 7th to first among the candidates.
    assert proposal.info["token"][0] == target
    others = [t for t in proposal.info["token"] if t != target]
    assert after[target] / after[others].sum() > 1.2 * before[target] / before[others].sum()


def test_token_rule_commits_the_scorers_token_and_records_attribution():
    gen = CausalLMGenerator("tiny-causal-lm", top_k=8, steps_per_token=3, step_size=2.0, fluency_weight=0.0,
                            fusion=1.0, max_new_tokens=1)
    context = "Tom has 3 apples and buys 2 more."
    plain = gen.generate_plain(context)
    state = gen.init_state(context, 0)
    proposal = gen.propose(state, context)
    target = proposal.info["token"][6]
    wanted = gen.text([target])
    ensemble = ScorerEnsemble({"prefers": PrefersToken(wanted), "verifier": SCORERS.make_tiny("sequence_classifier")},
                              )
    result = run_consensus(gen, ensemble, context, ConsensusConfig())
    assert result.output == wanted != plain
    assert len(result.rounds) == 3 and result.stop_reason == "generator_done"
    last = result.rounds[-1]
    assert set(last.scorer_energy) == {"prefers", "verifier"}
    assert last.info["scorer_top"]["prefers"] == gen.tokenizer.decode([target])
    assert last.info["committed"] == [gen.tokenizer.decode([target])]


def test_gradient_rule_with_tiny_clip_and_classifier_lowers_the_summed_energy():
    clip = SCORERS.make_tiny("clip")
    cls = SCORERS.make_tiny("classifier")
    init = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    context = {"prompt": "a red square", "label": 3, "init": init}
    gen = GradientGenerator(steps=10, step_size=0.5, normalise_grad=True)
    # Each real differentiable model alone: its own energy falls.
    for name, scorer in (("clip", clip), ("classifier", cls)):
        result = run_consensus(gen, ScorerEnsemble({name: scorer}), context, ConsensusConfig())
        assert result.rounds[-1].scorer_mean_energy[name] < result.rounds[0].scorer_mean_energy[name]
    # Together: the summed energy falls and both are recorded every round.
    ensemble = ScorerEnsemble({"clip": clip, "classifier": cls}, EnsembleConfig(weights={"clip": 0.01}))
    result = run_consensus(gen, ensemble, context, ConsensusConfig())
    assert result.rounds[-1].best_energy < result.rounds[0].best_energy
    assert all(set(r.scorer_energy) == {"clip", "classifier"} for r in result.rounds)
    assert not torch.equal(result.output, init)


def test_gradient_rule_needs_a_differentiable_scorer():
    gen = GradientGenerator(steps=2)
    ensemble = ScorerEnsemble({"verifier": PrefersToken("x")})
    proposal = Proposal(torch.zeros(1, 2), need_grad=True)
    feedback = ensemble.score(None, Proposal(["a"], need_grad=True))
    try:
        gen.refine(gen.init_state(None, 0), proposal, feedback)
    except RuntimeError as err:
        assert "no differentiable scorer answered" in str(err)
    else:  # pragma: no cover
        raise AssertionError("expected a RuntimeError")


def test_forward_memo_stays_within_its_memory_budget(monkeypatch):
    from collections import OrderedDict
    from types import SimpleNamespace

    from ensemble.generators import causal_lm

    monkeypatch.setattr(causal_lm, "MEMO_BYTES", 3 * 1000 * 4 * 3)  # three entries of 3 x 1,000 floats
    memo = SimpleNamespace(_memo=OrderedDict(), _memo_bytes=0)
    entry = lambda: (torch.zeros(1000), [(torch.zeros(1000), torch.zeros(1000))])  # noqa: E731
    for i in range(5):
        causal_lm.CausalLMGenerator._remember(memo, ((1,), (i,)), entry())
    assert list(memo._memo) == [((1,), (2,)), ((1,), (3,)), ((1,), (4,))]  # the oldest went first
    assert memo._memo_bytes == 3 * 12000
    causal_lm.CausalLMGenerator._remember(memo, ((1,), (3,)), entry())  # the same key again: counted once
    assert memo._memo_bytes == 3 * 12000 and list(memo._memo)[-1] == ((1,), (3,))
