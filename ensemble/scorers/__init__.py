"""Scorers. One file per scorer family; the registry name is the file stem.

Adding a scorer: write ``ensemble/scorers/<name>.py`` with a :class:`ensemble.contracts.Scorer`
subclass, and add one ``SCORERS.register(...)`` line below.
"""

from ensemble.registry import SCORERS

SCORERS.register("classifier", "ensemble.scorers.classifier:ClassifierScorer", "image classifier, log p(class | image); differentiable")
SCORERS.register("clip", "ensemble.scorers.clip:ClipScorer", "open_clip image-text similarity; differentiable")
SCORERS.register("quadratic", "ensemble.scorers.quadratic:QuadraticScorer", "analytic -|x - target|^2 (tests, overhead benchmarks)")
SCORERS.register("sequence_classifier", "ensemble.scorers.sequence_classifier:SequenceClassifierScorer", "question-solution classifier (verifier), log p(correct)")
