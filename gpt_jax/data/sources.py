"""Text sources, prepared once as ArrayRecord under data.data_dir and read back through tfds data sources.

Three kinds, named by data.source (docs/data.md has the details):
  stdlib            the running Python's standard library source tree (*.py), the offline default corpus
  files:<glob>,...  local plain-text files (one document per file) or JSONL (one document per line, data.text_field)
  tfds:<name>       any text dataset of the tensorflow-datasets catalog, prepared under data.data_dir
and weighted mixtures of them, 'stdlib@0.7;files:/corpus/*.txt@0.3'.

Local sources go through a tfds builder (`GptJaxText`) whose config name carries a fingerprint of the inputs, so a
prepared copy is reused until a file changes and is then rebuilt. Invalid UTF-8, NUL bytes and lone surrogates
become U+FFFD; they, empty documents and unreadable JSONL lines are counted in the prepared dataset's metadata and
logged. Every source has a 'train' and a 'validation' split; local documents are assigned by a hash of their key.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import math
import os
import logging as py_logging
import re
import shutil
import sysconfig
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds
from absl import logging

from gpt_jax.config import ConfigError

VALIDATION_FRACTION = 0.02  # share of documents (by hash of their key) in the validation split of local sources
_FORMAT_VERSION = 1  # bump when what a prepared local source contains changes, so old copies are rebuilt
_STDLIB_SKIP_DIRS = frozenset({'site-packages', 'dist-packages', '__pycache__'})
_JSONL_SUFFIXES = ('.jsonl', '.ndjson')
_BAD_CHARS = re.compile('[\x00\ud800-\udfff]')  # NUL marks binary junk; lone surrogates cannot be UTF-8 encoded
SPLITS = ('train', 'validation')


def stdlib_root() -> str:
  """The directory holding the running Python's standard library sources."""
  return sysconfig.get_paths()['stdlib']


@dataclasses.dataclass(frozen=True)
class _File:
  key: str  # path relative to the source's root: what the train/validation split hashes
  path: str
  jsonl: bool


def _stdlib_files() -> list[_File]:
  root = stdlib_root()
  files = []
  for directory, subdirs, names in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in _STDLIB_SKIP_DIRS)
    for name in names:
      path = os.path.join(directory, name)
      if name.endswith('.py') and os.path.isfile(path):
        files.append(_File(os.path.relpath(path, root).replace(os.sep, '/'), path, False))
  if not files:
    raise ConfigError(f'data.source=\'stdlib\' found no *.py files under {root}: this Python ships without its '
                      f'standard library sources, so use data.source=files:<glob> or tfds:<name>.')
  return sorted(files, key=lambda f: f.key)


def _glob_files(spec: str) -> list[_File]:
  patterns = [p.strip() for p in spec[len('files:'):].split(',') if p.strip()]
  if not patterns:
    raise ConfigError(f'data.source={spec!r} names no files: use files:<glob>[,<glob>...].')
  paths = {}
  for pattern in patterns:
    expanded = os.path.expanduser(pattern)
    # Only regular files: a FIFO or device that a glob happens to match would block the reader forever.
    matches = [os.path.abspath(p) for p in glob.glob(expanded, recursive=True) if os.path.isfile(p)]
    if not matches:
      raise ConfigError(f'data.source={spec!r}: the glob {pattern!r} matches no files (relative globs start in '
                        f'{os.getcwd()}).')
    for path in matches:
      paths[path] = _glob_root(os.path.abspath(expanded))
  # Keys relative to the common root of the globs are unique and do not change when the corpus is moved.
  root = os.path.commonpath(list(paths.values()))
  return sorted((_File(os.path.relpath(p, root).replace(os.sep, '/'), p, p.endswith(_JSONL_SUFFIXES))
                 for p in paths), key=lambda f: f.key)


def _glob_root(pattern: str) -> str:
  magic = re.search(r'[*?[]', pattern)
  return os.path.dirname(pattern[:magic.start()] if magic else pattern)


def _hash(key: str) -> int:
  return int.from_bytes(hashlib.sha256(key.encode('utf-8', 'surrogatepass')).digest()[:8], 'big')


def validation_keys(keys: Sequence[str]) -> set[str]:
  """The keys whose hash falls in the lowest VALIDATION_FRACTION of the hash range.

  A source with two or more documents always gets at least one validation document (its lowest hash) and keeps at
  least one for training; a single-document source has no validation split.
  """
  ranked = sorted((_hash(k), k) for k in keys)
  threshold = int(VALIDATION_FRACTION * 2**64)
  count = sum(1 for h, _ in ranked if h < threshold)
  count = min(max(count, 1 if len(ranked) > 1 else 0), max(len(ranked) - 1, 0))
  return {k for _, k in ranked[:count]}


def decode_text(raw: bytes) -> tuple[str, int]:
  """UTF-8 text with invalid bytes and NUL replaced by U+FFFD, and how many bytes were replaced."""
  try:
    text = raw.decode('utf-8')
    replaced = 0
  except UnicodeDecodeError:
    text = raw.decode('utf-8', errors='replace')
    # Bytes that decoded cleanly are the text's bytes minus 3 for each U+FFFD the decoder inserted.
    inserted = text.count('\ufffd') - raw.count('\ufffd'.encode('utf-8'))
    replaced = len(raw) - (len(text.encode('utf-8')) - 3 * inserted)
  text, bad = _BAD_CHARS.subn('\ufffd', text)
  return text, replaced + bad


def _documents(file: _File, text_field: str, counts: collections.Counter, wanted: set[str] | None = None):
  """Yields (key, text, replaced bytes) of the file's documents (those in `wanted`, if given), counting bad lines."""
  if not file.jsonl:
    if wanted is None or file.key in wanted:
      with open(file.path, 'rb') as f:
        yield file.key, *decode_text(f.read())
    return
  with open(file.path, 'rb') as f:
    for number, line in enumerate(f, 1):
      key = f'{file.key}:{number}'
      if not line.strip() or (wanted is not None and key not in wanted):
        continue
      text, replaced = decode_text(line)
      try:
        value = json.loads(text).get(text_field)
      except (ValueError, AttributeError):
        counts['bad_json_lines'] += 1
        continue
      if not isinstance(value, str):
        counts['lines_without_text_field'] += 1
        continue
      # JSON escapes can still spell NUL or lone surrogates.
      value, bad = _BAD_CHARS.subn('\ufffd', value)
      yield key, value, replaced + bad


_CONFIGS: dict[str, LocalTextConfig] = {}  # the local-source configs made in this process, by name


class _NoVariantFolderWarnings(py_logging.Filter):
  """tfds warns 'Variant folder <dir> has no dataset_info.json' while it looks for an earlier copy of a local
  source that is being prepared for the first time: expected there, and noise on a first run."""

  def filter(self, record) -> bool:
    return not str(record.msg).startswith('Variant folder ')


py_logging.getLogger('absl').addFilter(_NoVariantFolderWarnings())


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
  """One local corpus: its data.source spec, its files (in key order) and, for JSONL, the field holding the text."""

  spec: str = ''
  files: tuple[_File, ...] = dataclasses.field(default=(), repr=False)  # tfds logs the repr of custom configs
  text_field: str = 'text'


class GptJaxText(tfds.core.GeneratorBasedBuilder):
  """Local text / JSONL files as a tfds dataset with 'train' and 'validation' splits (ArrayRecord, no TensorFlow)."""

  VERSION = tfds.core.Version('1.0.0')

  def _log_download_bytes(self) -> None:
    # tfds announces "Downloading and preparing dataset Unknown size": nothing is downloaded for local files.
    print(f'preparing {self.builder_config.description} from {len(self.builder_config.files)} local files '
          f'(once; nothing is downloaded) under {self.data_dir}', flush=True)

  def _log_download_done(self) -> None:
    pass

  @classmethod
  def get_builder_config(cls, name: str, version=None) -> LocalTextConfig | None:
    # Configs are made per corpus at run time rather than listed in BUILDER_CONFIGS; knowing them keeps tfds from
    # warning about a custom config every time a source is opened.
    del version
    return _CONFIGS.get(name)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds locates a builder's code (for download checksums, which local files have none of) with a check that
    # imports the builder's module as a resource; a builder made at run time has no such module to locate.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description='A local corpus prepared by gpt_jax.data.sources.',
        features=tfds.features.FeaturesDict({'text': tfds.features.Text(), 'key': tfds.features.Text()}),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    # A first pass finds the non-empty documents, so the split is over real text and no split is written empty
    # (tfds refuses to finalise a split without examples).
    config = self.builder_config
    skipped = collections.Counter(empty_documents=0, bad_json_lines=0, lines_without_text_field=0)
    keys = []
    for file in config.files:
      for key, text, _ in _documents(file, config.text_field, skipped):
        if text.strip():
          keys.append(key)
        else:
          skipped['empty_documents'] += 1
    self.info.metadata['skipped'] = dict(skipped)
    if not keys:
      raise ConfigError(f'data.source={config.spec!r} holds no text ({len(config.files)} files, '
                        f'{skipped["empty_documents"]} empty documents, {skipped["bad_json_lines"]} bad JSONL lines, '
                        f'{skipped["lines_without_text_field"]} JSONL lines without a string data.text_field='
                        f'{config.text_field!r}): point it at non-empty text.')
    validation = validation_keys(keys)
    splits = {'train': self._generate_examples('train', set(keys) - validation)}
    if validation:
      splits['validation'] = self._generate_examples('validation', validation)
    return splits

  def _generate_examples(self, split: str, wanted: set[str]):
    counts = collections.Counter(documents=0, replaced_bytes=0, documents_with_replaced_bytes=0)
    for file in self.builder_config.files:
      for key, text, replaced in _documents(file, self.builder_config.text_field, collections.Counter(), wanted):
        counts['documents'] += 1
        counts['replaced_bytes'] += replaced
        counts['documents_with_replaced_bytes'] += bool(replaced)
        yield key, {'text': text, 'key': key}
    self.info.metadata[split] = dict(counts)


class _Texts(Sequence):
  """Random access to the text field of a tfds data source, as str."""

  def __init__(self, data_source, field: str):
    self._data_source = data_source
    self._field = field

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> str:
    if not 0 <= index < len(self._data_source):
      raise IndexError(index)  # ends iteration, which Sequence.__iter__ expects
    value = self._data_source[index][self._field]
    return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


class LocalSource:
  """'stdlib' or 'files:<glob>,...', prepared with the GptJaxText builder under data_dir/gpt_jax_text/."""

  def __init__(self, spec: str, data_dir: str, text_field: str):
    self.spec = spec
    files = _stdlib_files() if spec == 'stdlib' else _glob_files(spec)
    uses_field = any(f.jsonl for f in files)
    stats = [(f.key, f.path, f.jsonl, *_stat(f.path)) for f in files]
    self.fingerprint = hashlib.sha256(json.dumps(
        [_FORMAT_VERSION, text_field if uses_field else None, stats]).encode()).hexdigest()
    if spec == 'stdlib':
      self.slug = 'stdlib'
    else:
      readable = re.sub(r'[^a-z0-9]+', '-', spec[len('files:'):].lower()).strip('-')[-32:]
      self.slug = f'files-{readable}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}'
    self.cache_key = f'{self.slug}-{self.fingerprint[:12]}'
    self._data_dir = data_dir
    # One config object per name: tfds refuses a second, equal config under a name it already knows.
    self._config = _CONFIGS.setdefault(self.cache_key, LocalTextConfig(
        name=self.cache_key, spec=spec, files=tuple(files), text_field=text_field,
        description=f'gpt_jax data.source={spec!r}'))
    self._builder = None

  def prepare(self, download: bool = False) -> dict:
    """Builds the ArrayRecord copy unless an up-to-date one exists; returns the per-split report."""
    del download  # local files need none
    builder = self._make_builder()
    if not builder.is_prepared():
      with _build_lock(os.path.join(self._data_dir, 'gpt_jax_text'), self.slug):
        builder = self._build()
    self._builder = builder
    return {part: dict(builder.info.metadata.get(part, {})) for part in (*SPLITS, 'skipped')}

  def _build(self) -> GptJaxText:
    """Builds the copy under the build lock, unless a process that held the lock before us has built it."""
    builder = self._make_builder()
    if not builder.is_prepared():
      tfds.disable_progress_bar()
      logging.info('preparing data.source=%r (%d files) under %s', self.spec, len(self._config.files),
                   self._data_dir)
      try:
        builder.download_and_prepare()
      except OSError as e:
        raise ConfigError(f'data.source={self.spec!r}: cannot read {e.filename or "an input file"} '
                          f'({e.strerror}): fix its permissions or leave it out of the glob.') from None
      # The previous copy of this source (other input fingerprint) is stale now; prepared data is rebuilt, not kept.
      parent = os.path.dirname(os.path.dirname(builder.data_dir))
      for name in os.listdir(parent):
        if re.fullmatch(re.escape(self.slug) + r'-[0-9a-f]{12}', name) and name != self.cache_key:
          shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
      builder = self._make_builder()
      _log_report(self.spec, builder.info.metadata)
    return builder

  def _make_builder(self) -> GptJaxText:
    return GptJaxText(config=self._config, data_dir=self._data_dir, file_format='array_record')

  def texts(self, split: str) -> Sequence[str]:
    if self._builder is None:
      self.prepare()
    if split not in self._builder.info.splits:
      raise ConfigError(f'data.source={self.spec!r} has no {split} documents (a hash of the path picks '
                        f'~{VALIDATION_FRACTION:.0%} of documents for validation; a single document is all '
                        f'training): add a second file or document, or turn evaluation off (train.eval_every=0).')
    return _Texts(self._builder.as_data_source(split), 'text')


@contextlib.contextmanager
def _build_lock(parent: str, slug: str) -> Iterator[None]:
  """Serialises the builds of one source under one data_dir: processes started together on a fresh data_dir (a
  sweep's parallel runs, a run's processes on one machine) wait for the first to build it instead of writing the
  same files at once. flock(2), so a killed builder never leaves a stale lock. Across hosts it serialises only where
  the shared file system supports flock (NFS does; some parallel file systems lock per client or not at all); a file
  system that refuses flock builds unlocked, with a warning."""
  try:
    os.makedirs(parent, exist_ok=True)
    handle = open(os.path.join(parent, f'.{slug}.lock'), 'a', encoding='utf-8')
  except OSError as e:
    raise ConfigError(f'cannot write data.data_dir ({parent}: {e.strerror}): pass a directory this user can '
                      f'create and write.') from None
  with handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:
      logging.warning('%s: the file system has no flock, so concurrent builds of this source are not serialised.',
                      parent)
    yield


def _stat(path: str) -> tuple[int, int]:
  st = os.stat(path)
  return st.st_size, st.st_mtime_ns


def _log_report(spec: str, metadata) -> None:
  counts = {part: dict(metadata.get(part, {})) for part in (*SPLITS, 'skipped')}
  logging.info('prepared data.source=%r: %s', spec, counts)
  replaced = sum(counts[split].get('replaced_bytes', 0) for split in SPLITS)
  bad_lines = counts['skipped'].get('bad_json_lines', 0) + counts['skipped'].get('lines_without_text_field', 0)
  if replaced or bad_lines:
    logging.warning('data.source=%r: replaced %d invalid UTF-8 / NUL bytes with U+FFFD in %d documents and skipped '
                    '%d JSONL lines that were not JSON objects with a string text field.', spec, replaced,
                    sum(counts[split].get('documents_with_replaced_bytes', 0) for split in SPLITS), bad_lines)


class CatalogSource:
  """'tfds:<name>[/<config>][:<version>]': a tensorflow-datasets catalog dataset prepared as ArrayRecord."""

  def __init__(self, spec: str, data_dir: str, text_field: str):
    self.spec = spec
    self._name = spec[len('tfds:'):]
    self._data_dir = data_dir
    self._text_field = text_field
    self._builder = _catalog_builder(spec, self._name, data_dir)
    self.slug = 'tfds-' + re.sub(r'[^a-z0-9.]+', '-', self._builder.info.full_name.lower()).strip('-')
    self.fingerprint = None
    self.cache_key = None

  def _command(self) -> str:
    return (f'python -m gpt_jax.data prepare --config.data.source={self.spec} '
            f'--config.data.data_dir={self._data_dir}')

  def prepare(self, download: bool = False) -> dict:
    """Checks the dataset is prepared (or, with download=True, downloads and prepares it); returns its splits."""
    builder = self._builder
    if not builder.is_prepared():
      if not download:
        raise ConfigError(f'data.source={self.spec!r} is not prepared under data.data_dir={self._data_dir!r}: run '
                          f'`{self._command()}` on a machine with network access (most catalog builders also need '
                          f'TensorFlow there) and copy the result into this data_dir.')
      tfds.disable_progress_bar()
      try:
        builder.download_and_prepare()
      except ModuleNotFoundError as e:
        # Most catalog builders import TensorFlow (some Apache Beam), which gpt_jax deliberately does not install.
        raise ConfigError(f'preparing data.source={self.spec!r} needs the Python module {e.name!r}, which '
                          f'tensorflow-datasets imports to build catalog datasets: install it (and tensorflow) on '
                          f'the machine that prepares the data.') from None
      builder = self._builder = _catalog_builder(self.spec, self._name, self._data_dir)
    features = builder.info.features
    if self._text_field not in features:
      raise ConfigError(f'data.text_field={self._text_field!r} is not a feature of {builder.info.full_name} '
                        f'(features: {", ".join(sorted(features.keys()))}): set data.text_field to its text feature.')
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    self.fingerprint = hashlib.sha256(json.dumps([builder.info.full_name, sorted(splits.items()),
                                                  self._text_field]).encode()
                                      ).hexdigest()
    self.cache_key = f'{self.slug}-{self.fingerprint[:12]}'
    return {name: {'documents': n} for name, n in splits.items()}

  def texts(self, split: str) -> Sequence[str]:
    if self.fingerprint is None:
      self.prepare()
    available = self._builder.info.splits
    name = split if split in available else None
    if split == 'validation' and name is None:
      # Catalog datasets without a validation split (lm1b) hold out a test split instead.
      name = 'test' if 'test' in available else None
    if name is None:
      raise ConfigError(f'data.source={self.spec!r} has no {split} split (it has {", ".join(available)}): '
                        f'use another source for this split or turn evaluation off (train.eval_every=0).')
    try:
      data_source = self._builder.as_data_source(name)
    except NotImplementedError:
      raise ConfigError(f'data.source={self.spec!r} is prepared under {self._builder.data_dir} in a format without '
                        f'random access: delete that directory and run `{self._command()}` (it writes '
                        f'ArrayRecord).') from None
    return _Texts(data_source, self._text_field)


def _catalog_builder(spec: str, name: str, data_dir: str):
  try:
    return tfds.builder(name, data_dir=data_dir, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError:
    pass
  # Builders from before tfds' datasets/ layout (c4, wikipedia, wiki40b) register only once their module is imported.
  import tensorflow_datasets.text  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  try:
    return tfds.builder(name, data_dir=data_dir, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(f'data.source={spec!r}: tensorflow-datasets has no dataset {name!r}; see '
                      f'https://www.tensorflow.org/datasets/catalog/overview for the names.') from None


Source = LocalSource | CatalogSource


def parse_mixture(spec: str) -> list[tuple[str, float]]:
  """'a@0.7;b@0.3' -> [('a', 0.7), ('b', 0.3)]; a part without '@weight' weighs 1."""
  parts = []
  for part in spec.split(';'):
    part = part.strip()
    if not part:
      continue
    name, _, weight_text = part.rpartition('@')
    try:
      weight = float(weight_text) if name else None
    except ValueError:
      weight = None  # an '@' inside a path
    if weight is None:
      name, weight = part, 1.0
    if not (math.isfinite(weight) and weight > 0):
      raise ConfigError(f'data.source={spec!r}: the weight of {name.strip()!r} must be a positive number.')
    parts.append((name.strip(), weight))
  if not parts:
    raise ConfigError('data.source is empty: use stdlib, files:<glob>, tfds:<name> or a mixture a@0.7;b@0.3.')
  return parts


def open_source(spec: str, data_dir: str, text_field: str = 'text') -> Source:
  """One source (not a mixture) by its data.source spec."""
  data_dir = os.path.expanduser(data_dir)
  if spec == 'stdlib' or spec.startswith('files:'):
    return LocalSource(spec, data_dir, text_field)
  if spec.startswith('tfds:') and len(spec) > len('tfds:'):
    return CatalogSource(spec, data_dir, text_field)
  raise ConfigError(f'data.source={spec!r} is not a source: use stdlib, files:<glob>[,<glob>...], tfds:<name>, '
                    f'or a mixture such as stdlib@0.7;files:/corpus/*.txt@0.3.')


def open_sources(spec: str, data_dir: str, text_field: str = 'text') -> list[tuple[Source, float]]:
  """The (source, weight) components of data.source, in the order written."""
  return [(open_source(name, data_dir, text_field), weight) for name, weight in parse_mixture(spec)]


def catalog_records(spec: str, split: str, data_dir: str) -> list[dict]:
  """Every example of a prepared tfds catalog split ('tfds:<name>[/<config>]') as a dict, bytes decoded to str:
  the record formats of fine-tuning data (prompt/completion, preference pairs) read their fields from these."""
  source = CatalogSource(spec, data_dir, text_field='text')
  builder = source._builder  # noqa: SLF001 -- the same builder, prepared-or-not check included
  if not builder.is_prepared():
    raise ConfigError(f'{spec!r} is not prepared under data.data_dir={data_dir!r}: run `{source._command()}` on a '
                      f'machine with network access and copy the result into this data_dir.')
  if split not in builder.info.splits:
    raise ConfigError(f'{spec!r} has no {split!r} split (it has {", ".join(builder.info.splits)}): name one as '
                      f'tfds:<name>:<split>.')
  return [_plain(record) for record in builder.as_data_source(split)]


def _plain(value):
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if hasattr(value, 'tolist'):
    return _plain(value.tolist())
  if isinstance(value, list):
    return [_plain(v) for v in value]
  return value
