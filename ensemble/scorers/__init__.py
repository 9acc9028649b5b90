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
SCORERS.register("minilm_verifier", "ensemble.scorers.minilm_verifier:MiniLMVerifier", "math verifier: MiniLM embeddings of question + solution step, MLP head, log p(correct)", tiny={"checkpoint": None, "encoder": "tiny-text-encoder"})
SCORERS.register("numeric_verifier", "ensemble.scorers.numeric_verifier:NumericVerifier", "math verifier: numeric-consistency features + hashed n-grams, logistic, log p(correct)", tiny={"checkpoint": None})
SCORERS.register("view_relations", "ensemble.scorers.view_relations:ViewRelationsScorer", "segmentation-based relation energy in one camera view (robot)", tiny={"camera": "front"})
SCORERS.register("oracle_relations", "ensemble.scorers.oracle_relations:OracleRelationsScorer", "ground-truth goal relations from the simulator state (robot upper bound)", tiny={})
