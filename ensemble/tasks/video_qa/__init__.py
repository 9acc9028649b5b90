"""Video question answering: a causal LM guided token by token by an ensemble of CLIP models over video frames.

Everything specific to the task lives in this folder.
"""
