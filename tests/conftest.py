"""Test setup: 8 simulated CPU devices, so every test can build a (data, fsdp, tensor) mesh.

XLA_FLAGS must be set before jax is imported anywhere, which is why this lives in conftest.py.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402  (must come after XLA_FLAGS)

jax.config.update('jax_default_matmul_precision', 'highest')

from tests.train_runs import straight, train_data_dir  # noqa: E402, F401  (session fixtures of two test modules)
