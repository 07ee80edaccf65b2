"""GPT trunk, LM head and heads: shapes, init, vocab padding, KV cache == full forward, packing, variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import decoding
from gpt_jax import heads
from gpt_jax import model as gm
from tests.helpers import tiny_config


def _setup(**overrides):
  cfg = tiny_config(**overrides)
  lm = gm.GPTLM(cfg.model)
  params = gm.init_params(lm, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, cfg.model.context), 0, cfg.model.vocab_size)
  return cfg, lm, params, tokens


def test_shapes_d_head_independent_and_vocab_padding():
  cfg, lm, params, tokens = _setup(model__d_head=8, model__d_ff=96)
  assert cfg.model.padded_vocab_size == 384
  blocks = params['trunk']['blocks']
  assert blocks['attn']['qkv']['kernel'].shape == (2, 64, 4, 3, 8)
  assert blocks['attn']['out']['kernel'].shape == (2, 4, 8, 64)
  assert blocks['mlp']['fc']['kernel'].shape == (2, 64, 96)
  assert params['trunk']['wte']['embedding'].shape == (384, 64)
  logits = lm.apply({'params': params}, tokens)
  assert logits.shape == (3, 32, 384) and logits.dtype == jnp.float32
  assert np.all(np.asarray(logits[..., cfg.model.vocab_size:]) == gm.NEG_INF)
  assert np.all(np.asarray(jnp.argmax(logits, -1)) < cfg.model.vocab_size)


def test_init_statistics_gpt2_scheme():
  cfg = tiny_config(model__n_layers=8, model__d_model=256)
  params = gm.init_params(gm.GPTLM(cfg.model), jax.random.key(0))
  blocks = params['trunk']['blocks']
  assert np.std(blocks['attn']['qkv']['kernel']) == pytest.approx(0.02, rel=0.05)
  assert np.std(blocks['mlp']['fc']['kernel']) == pytest.approx(0.02, rel=0.05)
  assert np.std(blocks['attn']['out']['kernel']) == pytest.approx(0.02 / 4.0, rel=0.05)  # / sqrt(2 * 8)
  assert np.std(blocks['mlp']['proj']['kernel']) == pytest.approx(0.02 / 4.0, rel=0.05)
  assert np.all(np.asarray(blocks['ln_1']['scale']) == 1.0)
  assert np.all(np.asarray(blocks['attn']['qkv']['bias']) == 0.0)


def test_causality():
  cfg, lm, params, tokens = _setup()
  logits = lm.apply({'params': params}, tokens)
  changed = tokens.at[:, 20:].set((tokens[:, 20:] + 1) % cfg.model.vocab_size)
  logits2 = lm.apply({'params': params}, changed)
  np.testing.assert_array_equal(np.asarray(logits[:, :20]), np.asarray(logits2[:, :20]))
  assert not np.allclose(logits[:, 20:], logits2[:, 20:])


def test_local_band_limits_receptive_field():
  # Two layers (dense, then banded with width 4): the last position cannot see tokens that no chain of one
  # banded step and one dense step reaches, so the alternating model differs from the dense one but stays causal.
  cfg_dense, lm_dense, params, tokens = _setup()
  cfg_alt = tiny_config(model__attention='alternating', model__local_window=4)
  lm_alt = gm.GPTLM(cfg_alt.model)
  dense = lm_dense.apply({'params': params}, tokens)
  alt = lm_alt.apply({'params': params}, tokens)
  np.testing.assert_allclose(dense[:, :4], alt[:, :4], atol=1e-5)  # within the band both are identical
  assert not np.allclose(dense[:, 8:], alt[:, 8:], atol=1e-4)


@pytest.mark.parametrize('attention,positions', [('dense', 'learned'), ('alternating', 'learned'), ('dense', 'rope')])
def test_kv_cache_token_by_token_equals_full_forward(attention, positions):
  cfg, lm, params, tokens = _setup(model__attention=attention, model__local_window=5, model__positions=positions)
  full = lm.apply({'params': params}, tokens)
  step = jax.jit(lambda p, t, c: lm.apply({'params': p}, t, cache=c))
  cache = decoding.init_cache(cfg.model, tokens.shape[0], cfg.model.context)
  outs = []
  for t in range(tokens.shape[1]):
    logits, cache = step(params, tokens[:, t:t + 1], cache)
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-4, rtol=1e-4)
  assert np.all(np.asarray(cache['end']) == tokens.shape[1])


@pytest.mark.parametrize('attention,scan_layers', [('dense', True), ('alternating', True), ('alternating', False)])
def test_ragged_prefill_then_scan_decode_equals_full_forward(attention, scan_layers):
  cfg, lm, params, tokens = _setup(model__attention=attention, model__local_window=3, model__scan_layers=scan_layers)
  lengths = jnp.array([5, 11, 8])
  prefill_len, n_steps = 12, 10
  prompt = jnp.where(jnp.arange(prefill_len)[None] < lengths[:, None], tokens[:, :prefill_len], 0)
  cache = decoding.init_cache(cfg.model, 3, cfg.model.context)

  @jax.jit
  def run(params, prompt, cache):
    _, cache = lm.apply({'params': params}, prompt, cache=cache)
    cache = dict(cache, end=lengths)

    def body(cache, t):
      # Row b feeds its own continuation tokens[b, lengths[b] + t].
      token = jnp.take_along_axis(tokens, (lengths + t)[:, None], axis=1)
      logits, cache = lm.apply({'params': params}, token, cache=cache)
      return cache, logits[:, 0]
    return jax.lax.scan(body, cache, jnp.arange(n_steps))[1]

  stepped = run(params, prompt, cache)  # [n_steps, batch, vocab]
  full = lm.apply({'params': params}, tokens)
  for b in range(3):
    expected = full[b, lengths[b]:lengths[b] + n_steps]
    np.testing.assert_allclose(stepped[:, b], expected, atol=1e-4, rtol=1e-4)


def test_segment_ids_isolate_packed_documents():
  cfg, lm, params, tokens = _setup()
  seg = jnp.concatenate([jnp.ones((3, 12), jnp.int32), 2 * jnp.ones((3, 20), jnp.int32)], axis=1)
  pos = jnp.concatenate([jnp.arange(12), jnp.arange(20)])[None].repeat(3, 0)
  packed = lm.apply({'params': params}, tokens, segment_ids=seg, positions=pos)
  first = lm.apply({'params': params}, tokens[:, :12])
  second = lm.apply({'params': params}, tokens[:, 12:])
  np.testing.assert_allclose(packed[:, :12], first, atol=1e-5)
  np.testing.assert_allclose(packed[:, 12:], second, atol=1e-5)


def test_dot_product_attention_path_equals_xla_path():
  # On CPU jax.nn.dot_product_attention runs its XLA implementation; on a GPU the same call is cuDNN's kernel
  # (docs/performance.md has that comparison). Both take the same mask, so the alternating bands are checked too.
  cfg, lm, params, tokens = _setup(model__attention='alternating', model__local_window=6, model__dtype='bfloat16')
  xla = lm.apply({'params': params}, tokens)
  cfg2 = tiny_config(model__attention='alternating', model__local_window=6, model__attention_impl='cudnn',
                     model__dtype='bfloat16')
  other = gm.GPTLM(cfg2.model).apply({'params': params}, tokens)
  np.testing.assert_allclose(xla[..., :258], other[..., :258], atol=0.05)
  assert np.mean(np.abs(xla[..., :258] - other[..., :258])) < 5e-3


@pytest.mark.parametrize('remat', ['full', 'save_dots'])
def test_remat_policies_same_loss_and_grads(remat):
  cfg, lm, params, tokens = _setup()
  lm_remat = gm.GPTLM(tiny_config(model__remat=remat).model)

  def loss(module, p):
    return jnp.mean(jax.nn.logsumexp(module.apply({'params': p}, tokens), -1))
  l1, g1 = jax.value_and_grad(lambda p: loss(lm, p))(params)
  l2, g2 = jax.value_and_grad(lambda p: loss(lm_remat, p))(params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


def test_unscanned_layers_equal_scanned():
  cfg, lm, params, tokens = _setup(model__attention='alternating', model__local_window=4)
  cfg2 = tiny_config(model__attention='alternating', model__local_window=4, model__scan_layers=False)
  lm2 = gm.GPTLM(cfg2.model)
  np.testing.assert_allclose(lm.apply({'params': params}, tokens),
                             lm2.apply({'params': decoding.unstack_layers(params, cfg.model.n_layers)}, tokens), atol=1e-5)


def test_decoding_layout_is_the_same_function():
  cfg, lm, params, tokens = _setup(model__attention='alternating', model__local_window=4)
  full = lm.apply({'params': params}, tokens)
  for multiple, padded in ((1, 258), (4, 260)):
    decode_cfg, convert = decoding.decoding_layout(cfg.model, vocab_multiple=multiple)
    assert not decode_cfg.scan_layers and not decode_cfg.tie_embeddings and decode_cfg.padded_vocab_size == padded
    decoded = convert(params)
    assert decoded['lm_head'].shape == (cfg.model.d_model, padded)
    logits = gm.GPTLM(decode_cfg).apply({'params': decoded}, tokens)
    np.testing.assert_allclose(logits[..., :258], full[..., :258], atol=1e-5)
    assert np.all(np.asarray(logits[..., 258:]) == gm.NEG_INF)
  # logits_at computes the head at one position per row only.
  at = jnp.array([0, 17, 31])
  np.testing.assert_allclose(lm.apply({'params': params}, tokens, logits_at=at)[:, 0], full[jnp.arange(3), at],
                             atol=1e-5)


def test_scan_keeps_program_size_independent_of_depth():
  sizes = []
  for n_layers in (2, 48):
    cfg = tiny_config(model__n_layers=n_layers)
    lm = gm.GPTLM(cfg.model)
    abstract = jax.eval_shape(lambda: gm.init_params(lm, jax.random.key(0)))
    tokens = jax.ShapeDtypeStruct((2, 32), jnp.int32)
    grad = jax.jit(jax.grad(lambda p, t: jnp.mean(lm.apply({'params': p}, t))))
    sizes.append(len(grad.lower(abstract, tokens).as_text()))
  assert sizes[1] < 1.1 * sizes[0]


def test_post_layernorm_gpt1_and_untied_head():
  cfg = tiny_config(model__ln_placement='post', model__tie_embeddings=False)
  lm = gm.GPTLM(cfg.model)
  params = gm.init_params(lm, jax.random.key(0))
  assert 'ln_f' not in params['trunk'] and 'lm_head' in params
  logits = lm.apply({'params': params}, jnp.zeros((2, 8), jnp.int32))
  assert np.all(np.isfinite(logits[..., :cfg.model.vocab_size]))


def test_dropout_is_explicit_and_reproducible():
  cfg = tiny_config(model__dropout_embed=0.1, model__dropout_attn=0.1, model__dropout_resid=0.1)
  params = gm.init_params(gm.GPTLM(cfg.model), jax.random.key(0))
  tokens = jnp.ones((2, 16), jnp.int32)
  train_lm = gm.GPTLM(cfg.model, deterministic=False)
  a = train_lm.apply({'params': params}, tokens, rngs={'dropout': jax.random.key(1)})
  b = train_lm.apply({'params': params}, tokens, rngs={'dropout': jax.random.key(1)})
  c = train_lm.apply({'params': params}, tokens, rngs={'dropout': jax.random.key(2)})
  d = gm.GPTLM(cfg.model).apply({'params': params}, tokens)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, d)


def test_bfloat16_compute_float32_params():
  cfg = tiny_config(model__dtype='bfloat16')
  lm = gm.GPTLM(cfg.model)
  params = gm.init_params(lm, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens = jax.random.randint(jax.random.key(1), (2, 32), 0, 258)
  low = lm.apply({'params': params}, tokens)
  high = gm.GPTLM(tiny_config().model).apply({'params': params}, tokens)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low[..., :258], high[..., :258], atol=0.05)


def test_heads_share_the_trunk_subtree():
  cfg, lm, params, tokens = _setup()
  rm = heads.RewardModel(cfg.model)
  vm = heads.ValueModel(cfg.model)
  clf = heads.Classifier(cfg.model, n_classes=3)
  rm_params = gm.init_params(rm, jax.random.key(5))
  assert set(rm_params) == {'trunk', 'reward_head'}
  assert jax.tree.structure(rm_params['trunk']) == jax.tree.structure(params['trunk'])
  rm_params = dict(rm_params, trunk=params['trunk'])  # a pretrained trunk initialises the reward model
  mask = (jnp.arange(32)[None] < jnp.array([[10], [20], [32]])).astype(jnp.int32)
  garbage = jnp.where(mask > 0, tokens, 7)
  r1 = rm.apply({'params': rm_params}, tokens, mask)
  r2 = rm.apply({'params': rm_params}, garbage, mask)
  np.testing.assert_allclose(r1, r2, atol=1e-6)  # padding after the last real token is never read
  assert r1.shape == (3,)
  vm_params = dict(gm.init_params(vm, jax.random.key(6)), trunk=params['trunk'])
  assert vm.apply({'params': vm_params}, tokens).shape == (3, 32)
  clf_params = dict(gm.init_params(clf, jax.random.key(7)), trunk=params['trunk'])
  class_logits, lm_logits = clf.apply({'params': clf_params}, tokens, mask)
  assert class_logits.shape == (3, 3)
  np.testing.assert_allclose(lm_logits, lm.apply({'params': params}, tokens), atol=1e-5)


def test_cache_longer_than_context_is_refused():
  cfg = tiny_config()
  with pytest.raises(ValueError, match='model.context'):
    decoding.init_cache(cfg.model, 1, cfg.model.context + 1)


def test_an_id_past_the_embedding_table_reads_a_real_row_not_nan():
  cfg = tiny_config()
  module = gm.GPTLM(cfg.model)
  params = gm.init_params(module, jax.random.key(0))
  # A pad id one past a trimmed table (the sampler's decoding layout) at a position nothing attends to.
  tokens = jnp.array([[1, 2, 3, cfg.model.padded_vocab_size + 5]])
  logits = module.apply({'params': params}, tokens)
  assert np.isfinite(np.asarray(logits[0, :3])).all()
  np.testing.assert_allclose(logits[0, :3], module.apply({'params': params}, tokens[:, :3])[0], atol=1e-5)
