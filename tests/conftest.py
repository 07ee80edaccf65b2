"""Test setup: 8 simulated CPU devices, so every test can build a (data, fsdp, tensor) mesh, and one XLA
compilation cache for the session.

XLA_FLAGS must be set before jax is imported anywhere, which is why this lives in conftest.py.
"""

import atexit
import os
import shutil
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# Many tests start commands that compile the same tiny programs (a resumed run, a run on SLURM and its reference on
# one process): jax's persistent cache, shared through the environment, compiles each once. A fresh directory per
# session, removed at exit, so no session reads what another wrote. The size limit only turns on the cache's file
# lock, so that two processes never read an entry while one of them writes it.
_CACHE = tempfile.mkdtemp(prefix='gpt_jax_tests_xla_cache_')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1', JAX_COMPILATION_CACHE_MAX_SIZE=str(16 << 30))

import jax  # noqa: E402  (must come after XLA_FLAGS)

jax.config.update('jax_default_matmul_precision', 'highest')

from tests.train_runs import straight, train_data_dir  # noqa: E402, F401  (session fixtures of several test modules)
