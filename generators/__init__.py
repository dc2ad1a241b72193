"""Candidate image generators for the CLIS pipeline (``clis generate``).

``generators`` sits above ``clis`` in the dependency chain: it uses the layout model and
errors of ``clis``, and ``clis`` reaches it only through the ``clis.commands`` entry point.

Adapters: ``gligen`` (diffusers GLIGEN), ``sd`` (text-only Stable Diffusion baseline),
``instancediffusion`` (a user's checkout of InstanceDiffusion), ``copy-paste`` (cut-outs
composited at the boxes, CPU only) and ``shapes`` (labelled shapes, demos and tests only).
"""

from generators.base import GenerationError, GeneratorAdapter, candidate_seeds
from generators.registry import available_generators, create_generator, get_generator_class, register_generator

__all__ = [
    "GenerationError",
    "GeneratorAdapter",
    "available_generators",
    "candidate_seeds",
    "create_generator",
    "get_generator_class",
    "register_generator",
]
