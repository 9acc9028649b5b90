"""Image generation: a diffusion model guided by CLIP, a classifier and classifier-free guidance.

Everything specific to the task lives in this folder; this file only registers it (lazy entry point).
"""

from ensemble.registry import TASKS

TASKS.register("image", "ensemble.tasks.image.task:ImageTask", "class-conditional shapes (easy-vqa): diffusion + CLIP + classifier + CFG; independent-classifier accuracy, FID/KID/IS-like", tiny={"evaluator": "tiny-image-classifier"})
