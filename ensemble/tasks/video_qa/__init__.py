"""Video question answering: a causal LM guided token by token by an ensemble of CLIP models over video frames.

Everything specific to the task lives in this folder; this file only registers it and its components
(lazy entry points, nothing heavy is imported).
"""

from ensemble.registry import SCORERS, TASKS

TASKS.register("video_qa", "ensemble.tasks.video_qa.task:VideoQATask", "questions about videos (easy-VQA one-frame videos, tabletop clips, ActivityNet-QA format): LM + CLIPs over frames, exact match", tiny={"source": "easyvqa"})
SCORERS.register("video_clip", "ensemble.tasks.video_qa.video_clip:VideoClipScorer", "video QA: open_clip similarity of question + answer text with a video's frames (mean or max over frames)", tiny={"model": "tiny-clip"})
