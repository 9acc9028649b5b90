"""Generators. One file per generator family; the registry name is the file stem."""

from ensemble.registry import GENERATORS

GENERATORS.register("causal_lm", "ensemble.generators.causal_lm:CausalLMGenerator", "causal LM, token-level consensus (ZeroCap) + beam search", tiny={"model": "tiny-causal-lm", "max_new_tokens": 4, "top_k": 4, "steps_per_token": 2, "beam_size": 2})
GENERATORS.register("gradient", "ensemble.generators.gradient:GradientGenerator", "free tensor moved by the summed scorer gradients", tiny={"shape": (2, 2), "steps": 3})
GENERATORS.register("sampling", "ensemble.generators.sampling:SamplingGenerator", "random shooting / CEM; executes the argmin of the summed energy", tiny={"dim": 2, "n_candidates": 8, "rounds": 3})
GENERATORS.register("diffusion", "ensemble.generators.diffusion:DiffusionGenerator", "diffusion sampler (DDIM); each denoising step moved by the summed scorer gradients, + classifier-free guidance", tiny={"model": "tiny-unet", "steps": 3, "n_samples": 2, "guidance_scale": 1.0, "cfg_scale": 2.0})
