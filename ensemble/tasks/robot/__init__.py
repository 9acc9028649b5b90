"""Robot manipulation: MPC over the tabletop simulator, one segmentation scorer per camera view.

Everything specific to the task lives in this folder; this file only registers it and its components
(lazy entry points, nothing heavy is imported).
"""

from ensemble.registry import GENERATORS, SCORERS, TASKS

TASKS.register("robot", "ensemble.tasks.robot.task:RobotTask", "tabletop mugs and bowls: reach three spatial relations with MPC + per-view scorers; success", tiny={})
SCORERS.register("view_relations", "ensemble.tasks.robot.view_relations:ViewRelationsScorer", "segmentation-based relation energy in one camera view (robot)", tiny={"camera": "front", "segmenter": "simulator"})
SCORERS.register("view_layout", "ensemble.tasks.robot.view_layout:ViewLayoutScorer", "goal photo vs candidate view: segmented layout distance in one camera (robot)", tiny={"camera": "front", "segmenter": "colour"})
SCORERS.register("oracle_relations", "ensemble.tasks.robot.oracle_relations:OracleRelationsScorer", "ground-truth goal relations from the simulator state (robot upper bound)", tiny={})
GENERATORS.register("mpc", "ensemble.tasks.robot.mpc:MPCGenerator", "MPC over a world model: random shooting / CEM over pick-and-place plans", tiny={"n_candidates": 6, "iterations": 2, "max_steps": 2, "env_kwargs": {"width": 32, "height": 32}})
