"""Tasks: glue between datasets, components, answers and metrics. Registry name = file stem."""

from ensemble.registry import TASKS

TASKS.register("math", "ensemble.tasks.math:MathTask", "grade-school math (GSM8K format; GSM-Symbolic or a GSM8K JSONL), exact match", tiny={"source": "gsm_symbolic"})
TASKS.register("robot", "ensemble.tasks.robot:RobotTask", "tabletop mugs and bowls: reach three spatial relations with MPC + per-view scorers; success", tiny={})
TASKS.register("image", "ensemble.tasks.image:ImageTask", "class-conditional shapes (easy-vqa): diffusion + CLIP + classifier + CFG; independent-classifier accuracy, FID/KID/IS-like", tiny={"evaluator": "tiny-image-classifier"})
