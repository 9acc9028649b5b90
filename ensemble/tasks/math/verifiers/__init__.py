"""Verifiers for grade-school math: features, checkpoints and offline training (see ``train``)."""
