"""Generators. One file per generator family; the registry name is the file stem."""

from ensemble.registry import GENERATORS

GENERATORS.register("causal_lm", "ensemble.generators.causal_lm:CausalLMGenerator", "causal LM, token-level consensus (ZeroCap) + beam search")
GENERATORS.register("gradient", "ensemble.generators.gradient:GradientGenerator", "free tensor moved by the summed scorer gradients")
GENERATORS.register("sampling", "ensemble.generators.sampling:SamplingGenerator", "random shooting / CEM; executes the argmin of the summed energy")
