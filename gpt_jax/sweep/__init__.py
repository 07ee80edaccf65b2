"""Sweeps: a Python file that defines a product of runs (spec), running them here or emitting cluster jobs
(launch), their state (state) and one table of their results (collect). The command line is
`python -m gpt_jax.sweep list|run|status|collect|slurm|tpu --sweep=<file>.py`."""

from gpt_jax.sweep.resources import Resources
from gpt_jax.sweep.spec import Run, Shape, ShapeRule, Sweep, expand, load_sweep

__all__ = ['Resources', 'Run', 'Shape', 'ShapeRule', 'Sweep', 'expand', 'load_sweep']
