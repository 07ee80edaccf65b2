"""Dry-run: compile any config's training step for a TPU topology or a GPU cluster on a CPU host, and know before
launch whether it fits and how fast it can go (docs/dryrun.md).

    targets.py  compile-only devices: TPU topologies (libtpu), described GPU clusters (jax CUDA plugin), chip figures
    analyse.py  compile plan().step_fn on abstract inputs: memory against HBM, FLOPs, collectives, roofline
    hlo.py      collective bytes from the compiled HLO, loops unrolled by their trip counts
    search.py   the cheapest setting (mesh split, remat, microbatches) that fits a topology
    __main__.py python -m gpt_jax.dryrun
"""
