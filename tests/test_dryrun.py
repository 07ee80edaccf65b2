"""The dry-run compiles the real training step for TPU topologies and described GPU clusters on this CPU host.

Needs requirements-dryrun.txt installed in .venv/dryrun (libtpu, the jax CUDA plugin and cuDNN), as `make setup-dev`
does.
"""

import json
import os
import subprocess
import sys

import pytest

from gpt_jax import config as gcfg
from gpt_jax.config import ConfigError
from gpt_jax.dryrun import analyse
from gpt_jax.dryrun import hlo
from gpt_jax.dryrun import search
from gpt_jax.dryrun import targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A model of 0.1M parameters whose 2048-token rows of 50257-way logits cannot fit 16 GiB at 64 rows per chip.
TOO_BIG = {'model.vocab_size': 50257, 'model.context': 2048, 'train.batch_tokens': 256 * 2048,
           'train.total_tokens': 256 * 2048}


def test_a_tiny_step_compiles_for_a_tpu_slice_with_memory_and_flops():
  config = gcfg.load_config_file('configs/tiny.py:nano')
  report = analyse.compile_step(config, targets.build('v5e:2x2'))
  assert report.fits and report.devices == 4 and report.mesh == {'data': 1, 'fsdp': 4, 'tensor': 1}
  memory = report.memory
  assert memory['argument'] > 0 and memory['temp'] >= 0 and 0 < memory['total'] < report.hbm_bytes
  # Params are sharded four ways: the step gathers them, and its FLOPs are the model's as XLA counts them (one
  # layer of the scanned stack).
  assert report.collectives['all-gather'] > 0
  assert report.flops['compiled'] == pytest.approx(report.flops['model_as_counted'], rel=0.1)
  assert 0 < report.roofline['mfu_ceiling'] <= 1 and report.compile_seconds > 0


def test_two_slices_put_data_parallelism_across_them():
  config = analyse.with_slices(gcfg.load_config_file('configs/tiny.py:nano'), 2)
  report = analyse.compile_step(config, targets.build('v5e:2x2', num_slices=2))
  assert report.devices == 8 and report.slices == 2 and report.mesh == {'data': 2, 'fsdp': 4, 'tensor': 1}
  assert report.fits and report.memory['total'] > 0 and report.flops['compiled'] > 0
  assert report.collectives['all-reduce'] > 0  # gradients are reduced across the slices


def test_an_out_of_memory_config_is_reported_as_not_fitting():
  config = gcfg.load_config_file('configs/tiny.py:nano', TOO_BIG)
  report = analyse.compile_step(config, targets.build('v5e:2x2'))
  assert not report.fits and report.verdict.startswith('does not fit')
  assert 'RESOURCE_EXHAUSTED' in report.error and report.memory['total'] > report.hbm_bytes


def test_compiled_flops_of_an_unrolled_model_agree_with_flops_py():
  # Unrolled layers and no accumulation loop: XLA counts the whole step. Within 10%: XLA also counts the layer
  # norms, softmax, GELU and the optimizer, which flops.py leaves out (6% at this 0.1M-parameter size, 3.5% at
  # configs/tiny.py:micro).
  config = gcfg.load_config_file('configs/tiny.py:nano', {'model.scan_layers': False})
  report = analyse.compile_step(config, targets.build('v5e:2x2'))
  assert report.flops['model_as_counted'] == report.flops['model']
  assert report.flops['compiled_step'] == report.flops['compiled']
  assert report.flops['compiled'] == pytest.approx(report.flops['model'], rel=0.1)


def test_collectives_are_counted_once_per_loop_iteration():
  text = '''HloModule m

%body (p: (s32[], bf16[4,8])) -> (s32[], bf16[4,8]) {
  %p = (s32[], bf16[4,8]) parameter(0)
  %all-gather.1 = bf16[4,8]{1,0} all-gather(%x), channel_id=1, dimensions={0}
  %inner = (s32[]) while(%t), condition=%inner_cond, body=%inner_body, backend_config={"known_trip_count":{"n":"3"}}
}

%inner_body (q: (s32[])) -> (s32[]) {
  %all-reduce-start.2 = f32[10]{0} all-reduce-start(%y), to_apply=%add
  %all-reduce-done.2 = f32[10]{0} all-reduce-done(%all-reduce-start.2)
}

%inner_cond (q: (s32[])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%cond (p: (s32[], bf16[4,8])) -> pred[] {
  %constant.9 = s32[]{:T(128)} constant(6)
  ROOT %lt.1 = pred[] compare(%i, %constant.9), direction=LT
}

%unused (p: f32[2]) -> f32[2] {
  %all-gather.7 = f32[1000]{0} all-gather(%p), dimensions={0}
}

ENTRY %main (a: f32[10]) -> f32[10] {
  %loop = (s32[], bf16[4,8]) while(%init), condition=%cond, body=%body
  %all-reduce.3 = f32[10]{0} all-reduce(%a), to_apply=%add
}
'''
  assert hlo.executions(text)['inner_body'] == 18
  assert hlo.collective_bytes(text) == {'all-gather': 6 * 64, 'all-reduce': 18 * 40 + 40}


def test_search_stops_at_the_first_fit_and_ranks_by_step_time(monkeypatch):
  # A stand-in for the compiler: a setting fits once remat and microbatches shrink the activations enough, and a
  # step costs more with more recomputation and more microbatches.
  compiled = []

  def compile_step(config, target):
    split = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    remat, microbatches = config.model.remat, config.train.microbatches
    compiled.append((split, remat, microbatches))
    need = {'none': 8, 'save_dots': 4, 'full': 1}[remat] / microbatches / split[2]
    step = {'none': 1.0, 'save_dots': 1.05, 'full': 1.3}[remat] + 0.01 * microbatches + 0.1 * split[2]
    return analyse.Report(target=target.name, chip='c', devices=4, slices=1, mesh=dict(zip('dft', split)),
                          remat=remat, microbatches=microbatches, attention='xla', fits=need <= 1, verdict='',
                          hbm_bytes=1.0, memory=dict(total=need), roofline=dict(step_s=step))

  monkeypatch.setattr(search.analyse, 'compile_step', compile_step)
  config = gcfg.load_config_file('configs/tiny.py:nano', {'train.batch_tokens': 32 * 64})
  ranking = search.search(config, targets.build('v5e:2x2'))
  # Tensor 1 (FSDP): none needs 8 microbatches; save_dots is tried below 8 and fits at 4; full below 4 fits at 1.
  fsdp = [(remat, mb) for split, remat, mb in compiled if split == (1, 4, 1)]
  assert fsdp == [('none', 1), ('none', 2), ('none', 4), ('none', 8), ('save_dots', 1), ('save_dots', 2),
                  ('save_dots', 4), ('full', 1)]
  best = ranking[0]
  assert best.fits and (best.mesh['t'], best.remat, best.microbatches) == (1, 'none', 8)
  fits = [r.roofline['step_s'] for r in ranking if r.fits]
  assert fits == sorted(fits) and not ranking[-1].fits


def test_an_unknown_topology_a_mesh_mismatch_or_missing_libtpu_is_one_sentence(monkeypatch):
  with pytest.raises(ConfigError, match='not a known topology'):
    targets.build('v9z:2x2')
  with pytest.raises(ConfigError, match='at most 8 GPUs per node'):
    targets.build('h100:1x16')
  config = gcfg.load_config_file('configs/tiny.py:nano', {'mesh.fsdp': 3})
  with pytest.raises(ConfigError, match=r'--topology=v5e:2x2 \(4 devices'):
    analyse.compile_step(config, targets.build('v5e:2x2'))
  monkeypatch.setattr(targets.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(ConfigError, match='needs libtpu .*pip install'):
    targets.build('v5e:2x2')


def _dryrun(*args, tmp_path):
  return subprocess.run([sys.executable, '-m', 'gpt_jax.dryrun', *args], capture_output=True, text=True,
                        timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))


def test_a_gpu_node_compiles_with_cudnn_attention_and_writes_json(tmp_path):
  out = tmp_path / 'report.json'
  result = _dryrun('--config=configs/tiny.py:nano', '--topology=h100:1x8', '--config.model.dtype=bfloat16',
                   '--config.model.attention_impl=cudnn', f'--out={out}', tmp_path=tmp_path)
  assert result.returncode == 0, result.stderr
  report = json.loads(out.read_text())
  # The executable built on this CPU host calls cuDNN's fused attention: the mesh's platform chose it.
  assert report['attention'] == 'cudnn' and report['chip'].startswith('NVIDIA H100')
  assert report['fits'] and report['memory']['total'] > 0 and report['devices'] == 8
  # XLA gives no cost analysis for a GPU; the HLO's matmuls and cuDNN attention stand in, near flops.py's figure
  # (cuDNN's backward recomputes the attention scores: 14 attention matmul units where flops.py counts 12).
  assert report['flops']['source'] == 'hlo matmuls'
  assert report['flops']['compiled_step'] == pytest.approx(report['flops']['model'], rel=0.05)
  assert 'fits' in result.stdout and 'Could not find cuda drivers' not in result.stderr
  # A tiny config's figures are in MiB, not rounded to 0.00 GiB.
  assert ' MiB per chip of ' in result.stdout and '0.00 GiB' not in result.stdout


def test_sizes_read_in_mib_below_one_gib():
  assert targets.size(1.5 * 2**20) == '1.50 MiB' and targets.size(2**30) == '1.00 GiB'


def test_a_command_line_error_is_one_sentence(tmp_path):
  result = _dryrun('--config=configs/tiny.py:nano', '--topology=v5p-8', tmp_path=tmp_path)
  assert result.returncode == 2 and "--topology='v5p-8' is not a known topology" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr
