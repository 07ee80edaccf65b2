"""Sources: the stdlib corpus and its fixed split, local text / JSONL files, reuse and rebuild, the tfds catalog
path, mixtures, and bad input (bad bytes, empty files, bad JSONL, empty globs) handled or refused in one sentence."""

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

from gpt_jax.config import ConfigError
from gpt_jax.data import sources


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data if isinstance(data, bytes) else data.encode('utf-8'))


def _all_texts(source):
  return sorted(text for split in sources.SPLITS for text in source.texts(split))


def _total(report, field):
  return sum(report[part].get(field, 0) for part in report)


def test_stdlib_corpus_and_its_fixed_split(tmp_path):
  root = sources.stdlib_root()
  files = {}
  for directory, subdirs, names in os.walk(root):
    subdirs[:] = [d for d in subdirs if d not in ('site-packages', 'dist-packages', '__pycache__')]
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        files[os.path.relpath(path, root)] = sources.decode_text(open(path, 'rb').read())[0]
  assert sum(len(t) for t in files.values()) > 10_000_000  # tens of MB of real text, wherever Python lives
  validation = sources.validation_keys(list(files))
  assert 0.01 <= len(validation) / len(files) <= 0.03
  # A file's split depends on its path alone, not on which other files this Python ships.
  assert sources.validation_keys(sorted(files)[::2]) == {k for k in validation if k in sorted(files)[::2]}

  source = sources.open_source('stdlib', str(tmp_path))
  report = source.prepare()
  assert _total(report, 'documents') + _total(report, 'empty_documents') == len(files)
  assert sorted(source.texts('validation')) == sorted(files[k] for k in validation if files[k].strip())
  assert len(source.texts('train')) == sum(1 for k, t in files.items() if k not in validation and t.strip())


def test_text_and_jsonl_files_round_trip_with_bad_lines_counted(tmp_path):
  corpus = tmp_path / 'corpus'
  _write(corpus / 'a.txt', 'first document\nwith two lines\n')
  _write(corpus / 'sub' / 'b.md', '# second\n\nü and 中文\n')
  lines = [{'text': 'json one'}, {'text': 'json two', 'id': 2}, {'body': 'no text field'}, {'text': 'nul\u0000here'}]
  _write(corpus / 'c.jsonl', '\n'.join([json.dumps(x) for x in lines] + ['', '{not json', '{"text": "last"}']))
  source = sources.open_source(f'files:{corpus}/**/*.txt,{corpus}/**/*.md,{corpus}/*.jsonl', str(tmp_path / 'data'))
  report = source.prepare()
  assert _all_texts(source) == sorted(['first document\nwith two lines\n', '# second\n\nü and 中文\n', 'json one',
                                      'json two', 'nul\ufffdhere', 'last'])
  assert _total(report, 'bad_json_lines') == 1 and _total(report, 'lines_without_text_field') == 1
  assert _total(report, 'replaced_bytes') == 1
  assert len(source.texts('validation')) >= 1 and len(source.texts('train')) >= 1


def test_invalid_bytes_and_empty_files_are_replaced_and_counted(tmp_path):
  corpus = tmp_path / 'corpus'
  _write(corpus / 'bad.txt', b'ok \xff\xfe then \x00\x00 end \xc3')  # 3 invalid UTF-8 bytes and 2 NULs
  _write(corpus / 'good.txt', 'fine text \ufffd already here')  # a real U+FFFD is not a replacement
  _write(corpus / 'empty.txt', b'')
  _write(corpus / 'blank.txt', b' \n\n')
  replaced = 'ok \ufffd\ufffd then \ufffd\ufffd end \ufffd'
  assert sources.decode_text(b'ok \xff\xfe then \x00\x00 end \xc3') == (replaced, 5)
  source = sources.open_source(f'files:{corpus}/*.txt', str(tmp_path / 'data'))
  report = source.prepare()
  assert _total(report, 'replaced_bytes') == 5 and _total(report, 'documents_with_replaced_bytes') == 1
  assert _total(report, 'empty_documents') == 2 and _total(report, 'documents') == 2
  assert _all_texts(source) == ['fine text \ufffd already here', replaced]


def test_prepared_copy_is_reused_until_an_input_changes(tmp_path):
  corpus = tmp_path / 'corpus'
  for i in range(4):
    _write(corpus / f'{i}.txt', f'document {i}\n')
  spec, data_dir = f'files:{corpus}/*.txt', str(tmp_path / 'data')
  first = sources.open_source(spec, data_dir)
  first.prepare()
  prepared = tmp_path / 'data' / 'gpt_jax_text' / first.cache_key
  stamp = os.stat(prepared / '1.0.0' / 'dataset_info.json').st_mtime_ns
  again = sources.open_source(spec, data_dir)
  again.prepare()
  assert again.cache_key == first.cache_key
  assert os.stat(prepared / '1.0.0' / 'dataset_info.json').st_mtime_ns == stamp  # reused, not rebuilt

  _write(corpus / '2.txt', 'document 2, edited\n')
  changed = sources.open_source(spec, data_dir)
  changed.prepare()
  assert changed.cache_key != first.cache_key
  assert 'document 2, edited\n' in _all_texts(changed)
  prepared = [name for name in os.listdir(tmp_path / 'data' / 'gpt_jax_text') if name[0] != '.']  # not the lock
  assert prepared == [changed.cache_key]  # the stale copy is gone


def test_concurrent_builders_wait_for_the_first(tmp_path):
  """Processes started together on a fresh data_dir (a sweep's parallel runs) build the source once, in turn: while
  another process holds the build lock none of them writes, and all of them end with the same prepared copy."""
  corpus = tmp_path / 'corpus'
  for i in range(40):
    _write(corpus / f'{i}.txt', f'document {i}\n' * 50)
  spec, data_dir = f'files:{corpus}/*.txt', str(tmp_path / 'data')
  source = sources.open_source(spec, data_dir)
  lock_dir = tmp_path / 'data' / 'gpt_jax_text'
  os.makedirs(lock_dir)
  script = ('import sys; from gpt_jax.data import sources; s = sources.open_source(sys.argv[1], sys.argv[2]); '
            'print("ready", flush=True); s.prepare(); print(len(s.texts("train")))')
  with open(lock_dir / f'.{source.slug}.lock', 'a', encoding='utf-8') as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    builders = [subprocess.Popen([sys.executable, '-c', script, spec, data_dir], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    assert [b.stdout.readline() for b in builders] == ['ready\n'] * 2  # imported, about to build
    time.sleep(1)  # ample time to reach the lock
    assert [b.poll() for b in builders] == [None, None]
    assert os.listdir(lock_dir) == [f'.{source.slug}.lock']  # nothing written while the lock is held
  outputs = [b.communicate(timeout=120)[0] for b in builders]
  assert [b.returncode for b in builders] == [0, 0]
  assert [out.splitlines()[-1] for out in outputs] == [str(len(source.texts('train')))] * 2
  assert sum('preparing' in out for out in outputs) == 1  # built once; the second found it built


def test_bad_sources_are_refused_in_one_sentence(tmp_path):
  with pytest.raises(ConfigError, match=r"the glob '.*/nothing/\*\.txt' matches no files"):
    sources.open_source(f'files:{tmp_path}/nothing/*.txt', str(tmp_path))
  _write(tmp_path / 'empty' / 'a.txt', b'')
  _write(tmp_path / 'empty' / 'b.txt', b'\n')
  with pytest.raises(ConfigError, match='holds no text'):
    sources.open_source(f'files:{tmp_path}/empty/*.txt', str(tmp_path / 'data')).prepare()
  _write(tmp_path / 'jsonl' / 'a.jsonl', '{"body": "x"}\n{"body": "y"}\n')
  with pytest.raises(ConfigError, match=r"JSONL lines without a string data.text_field='text'"):
    sources.open_source(f'files:{tmp_path}/jsonl/*.jsonl', str(tmp_path / 'data')).prepare()
  _write(tmp_path / 'one' / 'only.txt', 'a single document')
  single = sources.open_source(f'files:{tmp_path}/one/*.txt', str(tmp_path / 'data'))
  assert list(single.texts('train')) == ['a single document']
  with pytest.raises(ConfigError, match='has no validation documents'):
    single.texts('validation')
  with pytest.raises(ConfigError, match="data.source='http://x' is not a source"):
    sources.open_source('http://x', str(tmp_path))
  for message in (str(e) for e in _errors(tmp_path)):
    assert message.count('. ') == 0 and message.endswith('.'), message  # one sentence each


def _errors(tmp_path):
  for spec in (f'files:{tmp_path}/none/*.x', 'tfds:lm1b', 'stdlib@0', 'nope'):
    try:
      for source, _ in sources.open_sources(spec, str(tmp_path / 'catalog')):
        source.prepare()
    except ConfigError as e:
      yield e
    else:
      raise AssertionError(f'{spec} was accepted')


def test_catalog_datasets_read_through_tfds_data_sources(tmp_path):
  data_dir = str(tmp_path / 'data')
  with pytest.raises(ConfigError, match=rf'run `python -m gpt_jax.data prepare --config.data.source=tfds:lm1b '
                                        rf'--config.data.data_dir={data_dir}` on a machine with network access'):
    sources.open_source('tfds:lm1b', data_dir).prepare()
  with pytest.raises(ConfigError, match="tensorflow-datasets has no dataset 'no_such_dataset'"):
    sources.open_source('tfds:no_such_dataset', data_dir)
  # A dataset prepared by tfds (here: a local corpus, so no network is needed) reads back through the catalog path.
  for i in range(3):
    _write(tmp_path / 'corpus' / f'{i}.txt', f'catalog document {i}')
  local = sources.open_source(f'files:{tmp_path}/corpus/*.txt', data_dir)
  local.prepare()
  catalog = sources.open_source(f'tfds:gpt_jax_text/{local.cache_key}', data_dir)
  assert catalog.prepare()['train']['documents'] == len(local.texts('train'))
  assert _all_texts(catalog) == _all_texts(local)
  with pytest.raises(ConfigError, match=r"data.text_field='body' is not a feature .*\(features: key, text\)"):
    sources.open_source(f'tfds:gpt_jax_text/{local.cache_key}', data_dir, text_field='body').prepare()


def test_mixture_spec_parsing():
  assert sources.parse_mixture('stdlib@0.7;files:/x/*.txt@0.3') == [('stdlib', 0.7), ('files:/x/*.txt', 0.3)]
  assert sources.parse_mixture('files:/data/a@b/*.txt') == [('files:/data/a@b/*.txt', 1.0)]
  assert sources.parse_mixture(' stdlib ; tfds:lm1b@2 ') == [('stdlib', 1.0), ('tfds:lm1b', 2.0)]
  assert sources.parse_mixture('files:/x@e;files:/y@-') == [('files:/x@e', 1.0), ('files:/y@-', 1.0)]
  for bad in ('stdlib@0;tfds:lm1b@1', 'stdlib@-2', 'stdlib@inf', 'stdlib@nan'):
    with pytest.raises(ConfigError, match="the weight of 'stdlib' must be a positive number"):
      sources.parse_mixture(bad)
  with pytest.raises(ConfigError, match='data.source is empty'):
    sources.parse_mixture(' ; ')
