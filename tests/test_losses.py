"""The shared log-prob helpers and the LM loss against independent formulas (log_softmax, optax)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpt_jax import losses
from gpt_jax import model as gm
from tests.helpers import tiny_config


def test_token_logprobs_equal_log_softmax_gather():
  logits = jax.random.normal(jax.random.key(0), (3, 5, 11)) * 4
  targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
  want = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(targets)[..., None], -1)[..., 0]
  np.testing.assert_allclose(losses.token_logprobs(logits, targets), want, rtol=1e-6, atol=1e-6)


def test_token_logprobs_ignore_padding_logits_at_neg_inf():
  logits = jnp.array([[1.0, 2.0, gm.NEG_INF, gm.NEG_INF]])
  np.testing.assert_allclose(losses.token_logprobs(logits, jnp.array([1])), np.log(np.exp(2) / (np.e + np.e**2)),
                             rtol=1e-6)


def test_sequence_logprobs_sum_only_the_masked_positions():
  logits = jax.random.normal(jax.random.key(2), (2, 6, 7))
  targets = jax.random.randint(jax.random.key(3), (2, 6), 0, 7)
  mask = np.array([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], bool)
  per_token = np.asarray(losses.token_logprobs(logits, targets))
  np.testing.assert_allclose(losses.sequence_logprobs(logits, targets, mask), (per_token * mask).sum(-1),
                             rtol=1e-6)
  # A masked-out position never contributes, even where its log-prob is -inf.
  huge = logits.at[0, 0, targets[0, 0]].set(-jnp.inf)
  assert np.isfinite(np.asarray(losses.sequence_logprobs(huge, targets, mask))).all()


def test_lm_loss_equals_optax_cross_entropy_over_the_loss_mask():
  config = tiny_config()
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, config.model.vocab_size)
  mask = jnp.array([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 0]], jnp.float32)
  batch = dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], loss_mask=mask)
  loss, weight, extra = losses.lm_loss_fn(config)(params, batch, jax.random.key(0), False, {})
  logits = module.apply({'params': params}, batch['inputs'])
  want = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
  np.testing.assert_allclose(loss, jnp.sum(want * mask), rtol=1e-5)
  assert float(weight) == 12.0 and extra == {}
