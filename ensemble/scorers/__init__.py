"""Scorers. One file per scorer family; the registry name is the file stem.

Adding a scorer: write ``ensemble/scorers/<name>.py`` with a :class:`ensemble.contracts.Scorer`
subclass, and add one ``SCORERS.register(...)`` line below (``tiny=`` builds it on tiny real models
for the contract tests).
"""

from ensemble.registry import SCORERS

SCORERS.register("classifier", "ensemble.scorers.classifier:ClassifierScorer", "image classifier, log p(class | image); differentiable", tiny={"model": "tiny-image-classifier"})
SCORERS.register("clip", "ensemble.scorers.clip:ClipScorer", "open_clip image-text similarity; differentiable", tiny={"model": "tiny-clip"})
SCORERS.register("quadratic", "ensemble.scorers.quadratic:QuadraticScorer", "analytic -|x - target|^2 (tests, overhead benchmarks)", tiny={"target": [0.5, -0.5]})
SCORERS.register("sequence_classifier", "ensemble.scorers.sequence_classifier:SequenceClassifierScorer", "question-solution classifier (verifier), log p(correct)", tiny={"model": "tiny-sequence-classifier"})
SCORERS.register("lm_scorer", "ensemble.scorers.lm_scorer:LMScorer", "a second causal LM rating candidate texts by log p(text | prompt) (product of experts; gemma-3-270m, any LM by name); abstains when flat", tiny={"model": "tiny-causal-lm"})
