"""Fine-tuning data: record formats, tokenised rows (EOS, padding, cuts), the resumable row stream, the toy task and
the one-sentence errors for bad input."""

import collections
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt_jax import config as gcfg
from gpt_jax.data.tokenizer import ByteTokenizer
from gpt_jax.rlhf import classify, dpo, reward, sft
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

TOK = ByteTokenizer()
EOS, PAD = TOK.eot_id, TOK.pad_id


def _write(tmp_path, lines, name='d.jsonl'):
  path = tmp_path / name
  path.write_text(''.join((x if isinstance(x, str) else json.dumps(x)) + '\n' for x in lines), encoding='utf-8')
  return str(path)


def _parse(tmp_path, stage_name, lines, parser, skip=False):
  records = rdata.read_records(_write(tmp_path, lines), '')
  fmt = rdata.detect_format(stage_name, records)
  counts = collections.Counter()
  return fmt, rdata.parse_all(records, fmt, parser(fmt), skip, counts), counts


def test_sft_formats_render_prompts_and_targets(tmp_path):
  fmt, [seg], _ = _parse(tmp_path, 'sft', [{'prompt': 'Q:', 'completion': ' A'}], rdata.sft_segments)
  assert fmt == 'prompt_completion' and seg == [('Q:', False), (' A', True)]
  fmt, parsed, _ = _parse(tmp_path, 'sft', [{'instruction': 'Add.', 'input': '1 2', 'output': '3'},
                                            {'instruction': 'Hi.', 'output': 'Hello'}], rdata.sft_segments)
  assert fmt == 'alpaca'
  assert parsed[0][0][0] == rdata.ALPACA.format(instruction='Add.', input='1 2') and parsed[0][1] == ('3', True)
  assert parsed[1][0][0] == rdata.ALPACA_NO_INPUT.format(instruction='Hi.')
  chat = {'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'},
                       {'role': 'assistant', 'content': 'Hello'}, {'role': 'user', 'content': 'Bye'},
                       {'role': 'assistant', 'content': 'Bye!'}]}
  fmt, [seg], _ = _parse(tmp_path, 'sft', [chat], rdata.sft_segments)
  assert fmt == 'chat'
  assert seg == [('System: Be brief.\n\nUser: Hi\n\nAssistant:', False), (' Hello', True),
                 ('\n\nUser: Bye\n\nAssistant:', False), (' Bye!', True)]
  tokens, mask = rdata.encode(TOK, seg, 200, 100, collections.Counter())
  # Both assistant turns, each with its EOS, are targets; nothing else is.
  assert TOK.decode(tokens[mask]) == ' Hello Bye!' and list(tokens[mask]).count(EOS) == 2


def test_preference_formats_and_rankings(tmp_path):
  fmt, [(prompt, responses, ranks)], _ = _parse(
      tmp_path, 'reward', [{'prompt': 'p', 'responses': ['a', 'b', 'c'], 'ranking': [2, 0, 1]}],
      lambda f: rdata.ranked_responses(4))
  assert fmt == 'rankings' and ranks == [1, 2, 0]  # response 2 is best
  hh = {'chosen': '\n\nHuman: hi\n\nAssistant: hello there', 'rejected': '\n\nHuman: hi\n\nAssistant: go away'}
  fmt, [pair], _ = _parse(tmp_path, 'dpo', [hh], lambda f: rdata.pair)
  assert fmt == 'hh' and pair == ('\n\nHuman: hi\n\nAssistant:', ' hello there', ' go away')
  fmt, [ranked], _ = _parse(tmp_path, 'reward', [{'prompt': 'p', 'chosen': 'a', 'rejected': 'b'}],
                            lambda f: rdata.ranked_responses(4))
  assert fmt == 'pairs' and ranked == ('p', ['a', 'b'], [0, 1])


@pytest.mark.parametrize('lines, stage_name, message', [
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", '], 'sft', 'd.jsonl:2 is not valid JSON'),
    ([{'prompt': 'a', 'completion': 'b'}, {'prompt': 'a'}], 'sft', "d.jsonl:2 lacks the field 'completion'"),
    ([{'prompt': 'a', 'completion': 3}], 'sft', "field 'completion' is a int, not a string"),
    ([{'prompt': 'a', 'responses': ['x', 'y'], 'ranking': [0, 0]}], 'reward', 'is not a permutation'),
    ([{'prompt': 'a', 'responses': ['x'], 'ranking': [0]}], 'reward', '1 responses; a ranking needs K = 2..4'),
    ([{'prompt': 'a', 'responses': list('abcde'), 'ranking': [0, 1, 2, 3, 4]}], 'reward', 'K = 2..4'),
    ([{'prompt': 'a', 'completion': 'b'}], 'dpo', 'which the dpo stage does not take'),
    ([{'question': 'a'}], 'sft', 'match no format of the sft stage'),
    (['[1, 2]'], 'sft', 'is a JSON list, not an object'),
    ([{'messages': [{'role': 'user', 'content': 'hi'}]}], 'sft', 'ends with the assistant turn'),
    ([{'messages': [{'role': 'robot', 'content': 'hi'}]}], 'sft', 'messages[0] must be'),
    ([{'prompt': 'p', 'chosen': 'a', 'rejected': 'b'}, {'prompt': 'p', 'chosen': ' 4', 'rejected': ' 4'}], 'dpo',
     "d.jsonl:2: 'chosen' and 'rejected' are the same response"),
    ([{'chosen': 'Human: hi\n\nAssistant: yes', 'rejected': 'Human: hi\n\nAssistant: yes'}], 'dpo',
     "d.jsonl:1: 'chosen' and 'rejected' are the same dialogue"),
    ([{'chosen': 'no markers here', 'rejected': 'no other text'}], 'dpo',
     "d.jsonl:1: 'chosen' and 'rejected' share no prompt ending in 'Assistant:'"),
    ([{'chosen': 'Human: hi\n\nAssistant: a', 'rejected': 'Human: yo\n\nAssistant: b'}], 'reward',
     "share no prompt ending in 'Assistant:'"),
])
def test_bad_records_are_one_sentence_naming_file_line_and_field(tmp_path, lines, stage_name, message):
  parser = {'sft': rdata.sft_segments, 'reward': lambda f: rdata.ranked_responses(4),
            'dpo': lambda f: rdata.pair}[stage_name]
  with pytest.raises(rdata.DataError) as error:
    _parse(tmp_path, stage_name, lines, parser)
  assert message in str(error.value) and '\n' not in str(error.value)


def test_empty_missing_and_non_utf8_files_are_refused(tmp_path):
  with pytest.raises(rdata.DataError, match='holds no records'):
    rdata.read_records(_write(tmp_path, ['', '  ']), '')
  with pytest.raises(rdata.DataError, match='does not exist'):
    rdata.read_records(str(tmp_path / 'nope.jsonl'), '')
  with pytest.raises(rdata.DataError, match=f"data file '{tmp_path}' is a directory, not a file: pass one .jsonl"):
    rdata.read_records(str(tmp_path), '')
  bad = tmp_path / 'latin.jsonl'
  bad.write_bytes('{"prompt": "caf\xe9"}\n'.encode('latin-1'))
  with pytest.raises(rdata.DataError, match='is not UTF-8'):
    rdata.read_records(str(bad), '')


def test_skip_bad_lines_skips_and_counts(tmp_path):
  lines = [{'prompt': 'a', 'completion': 'b'}, '{oops', {'prompt': 'a'}, {'prompt': 'c', 'completion': 'd'}]
  _, parsed, counts = _parse(tmp_path, 'sft', lines, rdata.sft_segments, skip=True)
  assert len(parsed) == 2 and counts['skipped_records'] == 2


def test_unicode_survives_the_round_trip(tmp_path):
  _, [seg], _ = _parse(tmp_path, 'sft', [{'prompt': 'Café ✓ ', 'completion': 'naïve 漢字'}], rdata.sft_segments)
  tokens, mask = rdata.encode(TOK, seg, 100, 50, collections.Counter())
  assert TOK.decode(tokens[mask]) == 'naïve 漢字'


def test_eos_first_mid_last_and_none():
  counts = collections.Counter()
  first, mask = rdata.encode(TOK, [('', False), ('', True)], 8, 4, counts)
  assert list(first) == [EOS] and list(mask) == [True]
  mid, mask = rdata.encode(TOK, [('ab', False), ('c', True)], 8, 4, counts)
  assert list(mid) == [97, 98, 99, EOS] and list(mask) == [False, False, True, True]
  last, mask = rdata.encode(TOK, [('ab', False), ('cdefg', True)], 8, 4, counts)
  assert len(last) == 8 and last[-1] == EOS and mask.sum() == 6
  assert not counts
  none, mask = rdata.encode(TOK, [('ab', False), ('cdefgh', True)], 8, 4, counts)
  assert len(none) == 8 and EOS not in none and counts['responses_truncated'] == 1
  cut, mask = rdata.encode(TOK, [('abcdef', False), ('x', True)], 8, 4, counts)
  assert TOK.decode(cut[~mask]) == 'cdef' and counts['prompts_cut_left'] == 1
  rows = rdata.sft_rows([[('ab', False), ('c', True)]], TOK, 6, 4, False, counts)
  assert list(rows['inputs'][0]) == [97, 98, 99, EOS, PAD, PAD] and PAD != EOS
  assert list(rows['targets'][0][:3]) == [98, 99, EOS] and list(rows['loss_mask'][0]) == [0, 1, 1, 0, 0, 0]


def test_packed_rows_keep_examples_apart():
  examples = [[('ab', False), ('c', True)], [('d', False), ('ef', True)], [('ghijk', False), ('l', True)]]
  rows = rdata.sft_rows(examples, TOK, 8, 8, True, collections.Counter())
  assert rows['inputs'].shape == (2, 8)
  assert list(rows['segment_ids'][0]) == [1, 1, 1, 2, 2, 2, 0, 0]
  assert list(rows['positions'][0][:6]) == [0, 1, 2, 0, 1, 2]
  assert TOK.decode(rows['targets'][0][rows['loss_mask'][0] > 0]) == 'cef'


def test_row_stream_is_a_pure_function_of_position_and_splits_over_hosts():
  rows = {'x': np.arange(10), 'weight': np.ones(10, np.float32)}
  one = rdata.RowStream(rows, 3, {'data': 't'})
  seen = np.concatenate([one.next_batch(4)['x'] for _ in range(5)])
  assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # epochs, no repeats
  assert not np.array_equal(seen[:10], seen[10:20])  # a fresh order each epoch
  hosts = [rdata.RowStream(rows, 3, {'data': 't'}, i, 2) for i in range(2)]
  for h in hosts:
    h.restore(dict(one.state(), position=8))
  again = rdata.RowStream(rows, 3, {'data': 't'})
  again.restore(dict(one.state(), position=8))
  assert np.array_equal(np.concatenate([h.next_batch(4)['x'] for h in hosts]), again.next_batch(4)['x'])
  with pytest.raises(gcfg.ConfigError, match='checksum'):
    rdata.RowStream({'x': np.arange(10) + 1, 'weight': rows['weight']}, 3, {'data': 't'}).restore(one.state())


def test_eval_batches_cover_every_row_once_and_pad_with_weight_zero():
  rows = {'loss_mask': np.ones((5, 3), np.float32), 'weight': np.ones(5, np.float32), 'ranks': np.zeros((5, 2))}
  batches = rdata.eval_batches(rows, 4)
  assert len(batches) == 2 and batches[1]['weight'].tolist() == [1, 0, 0, 0]
  assert batches[1]['loss_mask'][1:].sum() == 0 and (batches[1]['ranks'][1:] == -1).all()


def test_toy_task_is_judged_and_never_leaks_held_out_items():
  train = {x['prompt'] for x in toy.instructions(2000)}
  held = toy.instructions(200, held_out=True)
  assert not train & {x['prompt'] for x in held}
  for item in held[:50]:
    assert toy.judge(item['prompt'], item['completion']) and toy.answer_of(item['prompt']) == item['completion'][1:]
  words = collections.Counter(''.join(sorted(w)) for w in toy.WORDS)
  assert max(words.values()) == 1  # unscrambling has one answer
  for item in toy.rankings(100, max_k=5):
    scores = [toy.closeness(item['prompt'], item['responses'][i]) for i in item['ranking']]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores) and scores[0] == 0
  for item in toy.pairs(100):
    assert toy.judge(item['prompt'], item['chosen']) and not toy.judge(item['prompt'], item['rejected'])
  for item in toy.classification('choice', 50):
    assert sum(toy.closeness(f'Q: What is {item["context"].replace("+", "plus").replace("-", "minus")[:-2]}?\nA:',
                             c) == 0 for c in item['choices']) == 1


def test_a_prompt_budget_without_room_for_a_response_is_refused():
  config = gcfg.load_config_file('configs/rlhf.py:sft', {'rlhf.max_prompt_tokens': 128})
  with pytest.raises(gcfg.ConfigError, match='leaves a response no room'):
    stage.prepare(config)
  with pytest.raises(gcfg.ConfigError, match="'toy:choice' is not a toy task of this stage"):
    stage.toy_source(toy.instructions)(1, 0, False, 'choice')


_TOY_DIGEST = ('import hashlib, json; from gpt_jax.rlhf import toy; '
               'print(hashlib.sha256(json.dumps([toy.instructions(300), toy.rankings(300, max_k=5), toy.pairs(300), '
               '[toy.classification(k, 100) for k in ("single", "pair", "choice")]]).encode()).hexdigest())')


def test_toy_data_is_the_same_under_every_hash_seed(tmp_path):
  """String sets iterate in an order set by PYTHONHASHSEED: no generator, and no file of the toy command, may
  depend on it (a resumed run, or another host, would see other data)."""
  digests, trees = set(), []
  for seed in ('1', '2', '3'):
    env = dict(os.environ, PYTHONHASHSEED=seed, JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', _TOY_DIGEST], env=env, capture_output=True, text=True, check=True)
    digests.add(out.stdout)
    directory = tmp_path / seed
    subprocess.run([sys.executable, '-m', 'gpt_jax.rlhf', 'toy', f'--out={directory}', '--items=300',
                    '--held_out=50'], env=env, capture_output=True, check=True)
    trees.append({p.relative_to(directory): p.read_bytes() for p in directory.rglob('*') if p.is_file()})
  assert len(digests) == 1
  assert trees[0] == trees[1] == trees[2] and len(trees[0]) == 15


def _command(*args):
  return subprocess.run([sys.executable, '-m', *args], env=dict(os.environ, JAX_PLATFORMS='cpu'),
                        capture_output=True, text=True, timeout=300)


def test_toy_command_refuses_existing_files_and_more_items_than_there_are(tmp_path):
  out = tmp_path / 'toy'
  too_many = _command('gpt_jax.rlhf', 'toy', f'--out={out}', '--items=100000')
  assert too_many.returncode == 2 and too_many.stderr.strip() == (
      f'error: --items=100000 must be between 1 and {toy.max_items(False)}, the number of distinct training items '
      f'the toy task has.')
  assert not out.exists()
  assert 'between 1 and 1086' in _command('gpt_jax.rlhf', 'toy', f'--out={out}', '--held_out=5000').stderr
  out.mkdir()
  (out / 'sft_train.jsonl').write_text('my own data\n', encoding='utf-8')
  refused = _command('gpt_jax.rlhf', 'toy', f'--out={out}', '--items=50', '--held_out=10')
  assert refused.returncode == 2 and refused.stderr.strip() == (
      f'error: --out={out} already holds sft_train.jsonl: choose another --out, or pass --overwrite to replace them.')
  assert (out / 'sft_train.jsonl').read_text(encoding='utf-8') == 'my own data\n' and len(list(out.iterdir())) == 1
  replaced = _command('gpt_jax.rlhf', 'toy', f'--out={out}', '--items=50', '--held_out=10', '--overwrite')
  assert replaced.returncode == 0 and len((out / 'sft_train.jsonl').read_text().splitlines()) == 50
  again = _command('gpt_jax.rlhf', 'toy', f'--out={out}', '--items=50', '--held_out=10')
  assert again.returncode == 2 and f'already holds sft_train.jsonl and {len(toy.OUTPUTS) - 1} more' in again.stderr


def test_every_toy_item_can_be_drawn_and_one_more_is_refused_at_once():
  assert (toy.max_items(False), toy.max_items(True)) == (10095, 1086)
  assert len({x['prompt'] for x in toy.instructions(toy.available(True), held_out=True)}) == toy.available(True)
  for module, data, limit in ((sft, 'toy', 10095), (classify, 'toy:choice', 13964)):
    config = gcfg.load_config_file(f'configs/rlhf.py:{module.__name__.split(".")[-1]}',
                                   {'rlhf.toy_items': 50000, 'rlhf.data': data})
    start = time.perf_counter()
    with pytest.raises(gcfg.ConfigError) as error:
      module.build_task(config)
    assert str(error.value) == (f"rlhf.toy_items=50000 is more than the {limit} distinct training items of the toy "
                                f"task {data!r}: make it at most {limit}.")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize('stage_name, overrides, message', [
    ('dpo', {'rlhf.sft.pack': True}, 'rlhf.sft.pack=true packs SFT examples, but the dpo stage keeps one example '
                                     'per row: drop --config.rlhf.sft.pack.'),
    ('reward', {'rlhf.sft.pack': True}, 'but the reward stage keeps one example per row'),
    ('sft', {'train.total_tokens': 100_000}, 'rlhf.epochs=4 and train.total_tokens=100000 both set the run length: '
                                             'drop --config.train.total_tokens, or pass --config.rlhf.epochs=0 to '
                                             'train for train.total_tokens.'),
])
def test_contradictory_stage_settings_are_refused_before_the_data_is_read(stage_name, overrides, message):
  module = {'sft': sft, 'dpo': dpo, 'reward': reward}[stage_name]
  config = gcfg.load_config_file(f'configs/rlhf.py:{stage_name}', {'rlhf.data': '/nonexistent.jsonl', **overrides})
  with pytest.raises(gcfg.ConfigError) as error:
    module.build_task(stage.prepare(config))
  assert message in str(error.value)


def test_the_docs_state_the_toy_task_as_generated():
  doc = ' '.join(open('docs/rlhf.md', encoding='utf-8').read().split())
  classify = (toy.available(False, toy.CLASSIFY_KINDS, toy.CLASSIFY_TOP),
              toy.available(True, toy.CLASSIFY_KINDS, toy.CLASSIFY_TOP))
  assert (f'there are {toy.available(False)} distinct training items and {toy.available(True)} held-out ones '
          f'(classification: {classify[0]} and {classify[1]})') in doc
  items = toy.instructions(toy.available(False))
  operands = [int(w.rstrip('?')) for x in items for w in x['prompt'].split() if w.rstrip('?').isdigit()]
  answers = [int(x['completion']) for x in items if x['completion'].strip().isdigit()]
  assert f'from 0 to {max(operands)} (answers up to {max(answers)};' in doc
  wrong = [int(r) for x in toy.rankings(toy.available(False), max_k=9) for r in x['responses'] if r.strip().isdigit()]
  assert 'the wrong answers of rankings and pairs stay below 120)' in doc and 100 < max(wrong) < 120
