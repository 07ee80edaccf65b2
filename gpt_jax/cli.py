"""The command-line face shared by every entry point (train, sample, eval, and the fine-tuning stages).

One place for: the --config flag and its --config.<field> overrides (loaded and validated once, printed with
--print_config), the multi-host flags and jax.distributed initialisation, the model-loading flags of inference
commands (--workdir / --init / --mesh), and the rule that a bad flag, config field, file or mesh ends the program
with one sentence on stderr and exit status 2, never a traceback.

    def main(argv): config = cli.config_from_flags(); ...
    if __name__ == '__main__': cli.run_main(main, 'configs/tiny.py:micro')
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError

_default_spec = None


def run_main(main, default_spec: str | None = None, commands: tuple[str, ...] = ()) -> None:
  """Runs an absl entry point: defines --config and the multi-host flags, refuses stray positional arguments (all
  but one of `commands`), initialises jax.distributed, then calls main(argv). Bad flags and ConfigErrors end the
  program with one sentence on stderr and exit status 2; --print_config prints the config and exits. Logging
  starts at WARNING: orbax logs every checkpoint save and restore at INFO (--verbosity=0 brings it back)."""
  sys.argv = [_integral_token_count(arg) for arg in sys.argv]
  define_config_flag(default_spec)
  _define_distributed_flags()
  flags.DEFINE_bool('print_config', False, 'print every config field with its value and meaning (the --config '
                    'file with its overrides, or the --workdir run\'s own config.json), then exit.')
  _list_in_help('config', 'print_config', 'coordinator_address', 'num_processes', 'process_id')

  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      if commands and len(argv) == 2 and argv[1] not in commands:
        raise ConfigError(f'unknown command {argv[1]!r}: use one of {", ".join(commands)}.')
      if len(argv) > 1 and not (commands and len(argv) == 2):
        raise ConfigError(f'unexpected arguments {" ".join(argv[1:])!r}: every option is a --flag, e.g. '
                          f'--workdir=runs/x or --config.<field>=<value>.')
      f = flags.FLAGS
      if f.print_config:
        return _print_config()
      initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)
      return main(argv)
    except ConfigError as error:
      print(f'error: {error}', file=sys.stderr)
      return 2
    except KeyboardInterrupt:
      # Training saves on Ctrl-C itself (loop.run); this is a Ctrl-C anywhere else (start-up, sampling, eval).
      print('interrupted (Ctrl-C).', file=sys.stderr)
      return 130
  app.run(guarded, flags_parser=_flags_parser)


def _list_in_help(*names: str) -> None:
  """absl's --help lists the flags of the command's own module; these shared ones are defined here."""
  for name in names:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def _integral_token_count(arg: str) -> str:
  """--config.<...>_tokens=2.5e9 -> --config.<...>_tokens=2500000000: token counts are integer fields, and
  nobody types nine zeros. Other values, and counts that are not whole numbers, are left for the parser."""
  key, sep, value = arg.partition('=')
  if not (sep and key.startswith('--config.') and key.endswith('_tokens')):
    return arg
  try:
    number = float(value)
  except ValueError:
    return arg
  return f'{key}={int(number)}' if number.is_integer() else arg


def _print_config() -> int:
  """--workdir=<run> (without --config) prints that run's own config.json; otherwise the --config file with its
  overrides (for a training command, the config a new run in --workdir would start with)."""
  workdir = flags.FLAGS['workdir'].value if 'workdir' in flags.FLAGS else None
  config_given = any(arg.startswith('--config') for arg in sys.argv[1:])
  run_config = workdir and os.path.isfile(os.path.join(workdir, ckpt.CONFIG_FILE))
  if workdir and not config_given and (run_config or _default_spec is None):
    config = ckpt.load_config(workdir)
  else:
    config = config_from_flags()
  if config is None:
    raise ConfigError('--print_config needs --config=configs/<file>.py[:<arg>] or --workdir=<run>.')
  print(gcfg.describe(config))
  return 0


def define_config_flag(default_spec: str | None) -> None:
  """Defines --config (and its --config.<key> overrides). config_flags loads the file and applies the overrides
  found in sys.argv right here, so a bad flag is reported here, in one sentence, with exit status 2."""
  global _default_spec
  _default_spec = default_spec
  try:
    config_flags.DEFINE_config_file('config', default_spec, 'Config file and argument, e.g. configs/gpt3.py:125m.',
                                    lock_config=True)
  except Exception as error:  # noqa: BLE001 -- see _flags_parser
    print(f'error: {_flag_error_message(error, sys.argv)}', file=sys.stderr)
    sys.exit(2)


def config_from_flags() -> ml_collections.ConfigDict | None:
  """The validated --config (validated here, once), or None when the entry point has no default and none was
  given; a ConfigError if it is bad."""
  if flags.FLAGS['config'].value is None and _default_spec is None:
    return None
  try:
    config = flags.FLAGS.config
    config.keys()  # a file that failed to load is a placeholder that raises on first use
  except Exception as error:  # noqa: BLE001 -- whatever config_flags raised, report it in one sentence
    raise ConfigError(_flag_error_message(error, sys.argv)) from None
  config = gcfg.validate(config)
  warn_about_platform(config)
  return config


def warn_about_platform(config) -> None:
  """A line on stderr when the config asks for something this host's devices do not do."""
  if config.model.attention_impl != 'cudnn':
    return  # and the backend stays untouched (the data command never starts it)
  platform = jax.devices()[0].platform
  if platform != 'gpu' and jax.process_index() == 0:
    print(f"warning: model.attention_impl='cudnn' runs on NVIDIA GPUs only; on {platform} "
          f"jax.nn.dot_product_attention uses its XLA implementation.", file=sys.stderr, flush=True)


def _flags_parser(argv):
  """absl `flags_parser` for entry points: a bad --config or --config.<key> flag ends the program with one
  sentence (exit 2) instead of a traceback from inside the flag machinery."""
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # noqa: BLE001 -- config_flags raises flag errors, KeyError, AttributeError, OSError
    print(f'error: {_flag_error_message(error, argv)}', file=sys.stderr)
    sys.exit(2)


def _flag_error_message(error: Exception, argv) -> str:
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), _default_spec)
  if spec is None:
    return str(error).strip().splitlines()[0]
  try:
    config = gcfg.load_config_file(spec)
    for arg in argv:
      if arg.startswith('--config.'):
        key, sep, value = arg[len('--config.'):].partition('=')
        gcfg.check_key(config, key, value if sep else None)
  except ConfigError as config_error:
    return str(config_error)
  # The file loads and every key exists: a value did not parse as its field's type (or another flag is wrong).
  return str(error).strip().splitlines()[0]


# ---------------------------------------------------------------------------------------------------------------
# Training commands: the run directory and what run.json records.

def define_workdir_flag() -> None:
  """--workdir of a training command (defined once, however many command modules a program imports)."""
  if 'workdir' not in flags.FLAGS:
    flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and TensorBoard logs.')


def check_workdir(workdir: str | None, flag: str = 'workdir') -> None:
  """A training command's --workdir (or the --<flag> holding its runs): given, and a directory when it exists."""
  if not workdir:
    raise ConfigError(f'--{flag} is required: the directory for checkpoints and logs, e.g. --{flag}=runs/x.')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--{flag}={workdir} is a file, not a directory: pass a new or existing run directory.')


def run_record(config, tokenizer) -> dict:
  """What run.json records about how the run was started: the command, the code (git commit and whether the tree
  had uncommitted changes) and library versions, the devices and the tokenizer."""
  versions = {name: importlib.metadata.version(name)
              for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')}
  return dict(argv=sys.argv, git=_git_state(), versions=versions, python=sys.version.split()[0],
              processes=jax.process_count(), devices=jax.device_count(), device_kind=jax.devices()[0].device_kind,
              tokenizer=config.data.tokenizer, tokenizer_checksum=tokenizer.checksum)


def _git_state() -> dict | None:
  """{'commit', 'dirty'} of the checkout gpt_jax runs from, or None outside a git checkout (an installed package)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True, timeout=10)
    status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root, capture_output=True,
                            text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  if commit.returncode:
    return None
  return dict(commit=commit.stdout.strip(), dirty=bool(status.stdout.strip()))


# ---------------------------------------------------------------------------------------------------------------
# Outputs: every command that writes a file or directory checks it first, with one rule.

def define_overwrite_flag() -> None:
  """--overwrite, for the commands that write outputs (defined once, however many command modules a program
  imports)."""
  if 'overwrite' not in flags.FLAGS:
    flags.DEFINE_bool('overwrite', False, 'replace outputs that already exist (without it, an existing output is '
                      'refused before any work is done).')
    _list_in_help('overwrite')


def check_output(flag: str, path: str | None, *, directory: bool = False) -> str:
  """--<flag>=<path>, an output, checked before any work: given, of the right kind (a file, or a directory),
  somewhere it can be created, and new (a file that does not exist, or a directory that is absent or empty) unless
  --overwrite was passed. Returns path; raises a ConfigError naming the flag and the fix."""
  if not path:
    raise ConfigError(f'--{flag} is required: the {"directory" if directory else "file"} to write to.')
  if '://' in path:
    return path  # a bucket: nothing to check cheaply
  if directory and os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f'--{flag}={path} is a file, not a directory: pass a directory path.')
  if not directory and os.path.isdir(path):
    raise ConfigError(f'--{flag}={path} is a directory: pass a file path inside it.')
  _check_creatable(flag, path)
  exists = os.path.isdir(path) and os.listdir(path) if directory else os.path.exists(path)
  if exists and not flags.FLAGS['overwrite'].value:
    raise ConfigError(f'--{flag}={path} already exists{" and is not empty" if directory else ""}: choose a new '
                      f'path, or pass --overwrite to replace it.')
  return path


def check_outputs_in(flag: str, directory: str, names) -> None:
  """The files (or folders) `names` a command writes into --<flag>=<directory>, a directory that may hold other
  things: refused before any work when one of them exists, unless --overwrite was passed."""
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise ConfigError(f'--{flag}={directory} is a file, not a directory: pass a directory path.')
  _check_creatable(flag, directory)
  taken = [name for name in names if os.path.exists(os.path.join(directory, name))]
  if taken and not flags.FLAGS['overwrite'].value:
    more = f' and {len(taken) - 1} more of the outputs of this command' if len(taken) > 1 else ''
    raise ConfigError(f'--{flag}={directory} already holds {taken[0]}{more}: choose another --{flag}, or pass '
                      f'--overwrite to replace them.')


def _check_creatable(flag: str, path: str) -> None:
  """The nearest existing folder above path is a writable directory, so path (and its parents) can be created."""
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ConfigError(f'--{flag}={path} cannot be created: {parent} is a file, not a directory.')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f'--{flag}={path} cannot be created: {parent} is not writable.')


# ---------------------------------------------------------------------------------------------------------------
# Multi-host.

def _define_distributed_flags() -> None:
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 for multi-host runs.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes in a multi-host run.')
  flags.DEFINE_integer('process_id', None, 'This process index in a multi-host run.')


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """jax.distributed.initialize from explicit flags, from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID, or (GPT_JAX_DISTRIBUTED=1, set by launch/) from the cluster environment that jax detects
  itself (Cloud TPU, SLURM). With none of these a single process runs alone, so one entry point serves a laptop."""
  coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if coordinator_address:
    try:
      num_processes = num_processes if num_processes is not None else int(os.environ['JAX_NUM_PROCESSES'])
      process_id = process_id if process_id is not None else int(os.environ['JAX_PROCESS_ID'])
    except KeyError as missing:
      raise ConfigError(f'a coordinator address is set but {missing.args[0]} is not: give --num_processes and '
                        f'--process_id (or JAX_NUM_PROCESSES and JAX_PROCESS_ID) too.') from None
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif os.environ.get('GPT_JAX_DISTRIBUTED') == '1':
    # jax's SLURM detection gives each task the one GPU of its local rank; with one task per node (our launch
    # script) that task must own all of the node's GPUs.
    gpus = os.environ.get('SLURM_GPUS_ON_NODE')
    one_task_per_node = os.environ.get('SLURM_NTASKS_PER_NODE') == '1'
    jax.distributed.initialize(local_device_ids=list(range(int(gpus))) if gpus and one_task_per_node else None)


# ---------------------------------------------------------------------------------------------------------------
# Loading a model for inference (sample, eval).

def define_model_flags(random_init: bool = True) -> None:
  """The flags that choose the model and devices of an inference command (gpt_jax.sample, gpt_jax.eval; without
  --init and --seed for commands that only read checkpoints, such as gpt_jax.export)."""
  flags.DEFINE_string('workdir', None, 'run directory (or export_params directory) whose latest checkpoint and '
                      'config are loaded.')
  if random_init:
    flags.DEFINE_enum('init', 'checkpoint', ['checkpoint', 'random'], 'where the parameters come from.')
    flags.DEFINE_integer('seed', 0, 'init seed with --init=random (and the sampling seed of gpt_jax.sample).')
  flags.DEFINE_string('mesh', None, 'data,fsdp,tensor sizes of the device mesh, one may be -1 (default: the '
                      'config\'s mesh section), e.g. --mesh=-1,1,1 for data parallelism over all devices.')
  _list_in_help('workdir', 'mesh', *(('init', 'seed') if random_init else ()))


def inference_mesh(config, spec: str | None, flag: str = '--mesh', sep: str = ','):
  """The mesh evaluation and sampling run on: --mesh=data,fsdp,tensor (one of them may be -1), else the run's
  own config.mesh, so a model that needed FSDP or tensor parallelism to train is loaded sharded the same way.
  flag and sep spell the setting as the command takes it (lm-eval's model_args: mesh=-1x1x1)."""
  example = f'{flag}={sep.join(("-1", "1", "1"))}'
  if spec:
    try:
      data, fsdp, tensor = (int(x) for x in spec.split(sep))
    except ValueError:
      separated = 'comma-separated' if sep == ',' else f'{sep}-separated'
      raise ConfigError(f'{flag}={spec} must be three {separated} sizes data{sep}fsdp{sep}tensor (one may be -1), '
                        f'e.g. {example}.') from None
    config = config.copy_and_resolve_references()
    config.mesh.update(data=data, fsdp=fsdp, tensor=tensor, dcn_data=1, dcn_fsdp=1)
  try:
    return gs.make_mesh(gcfg.validate(config).mesh)
  except ConfigError as error:
    reason = str(error).rstrip('.')
    if spec:
      raise ConfigError(f'{flag}={spec} does not fit the {jax.device_count()} devices and this model ({reason}); '
                        f'give other data{sep}fsdp{sep}tensor sizes, e.g. {example}.') from None
    raise ConfigError(f'the run\'s own mesh does not fit the {jax.device_count()} devices here ({reason}); pass '
                      f'{flag}=data{sep}fsdp{sep}tensor, e.g. {example}.') from None


def load_model(config, workdir: str | None, init: str, seed: int = 0, mesh_spec: str | None = None,
               mesh_flag: tuple[str, str] = ('--mesh', ',')):
  """(config, module, params, step, mesh) of a GPTLM from a run's latest checkpoint or an export, or randomly
  initialised from a config.

  --workdir=runs/x reads the run's own config (validated once) and params; --init=random with
  --config=configs/<file>.py:<arg> (config, already validated by config_from_flags) builds a smoke-test model
  (step None). Params come sharded over inference_mesh(config, mesh_spec, *mesh_flag).
  """
  if init == 'random':
    if config is None:
      raise ConfigError('--init=random needs --config=configs/<file>.py[:<arg>] to know the model shape.')
    mesh = inference_mesh(config, mesh_spec, *mesh_flag)
    module = gm.GPTLM(config.model)
    shardings = gs.param_shardings(gm.abstract_variables(module)['params'], mesh)
    return config, module, gm.init_params(module, jax.random.key(seed), shardings=shardings), None, mesh
  if init != 'checkpoint':
    raise ConfigError(f'--init={init!r} is not valid: use checkpoint (with --workdir) or random (with --config).')
  if not workdir:
    raise ConfigError('pass --workdir=runs/<run> to load a checkpoint, or --config=... --init=random for a smoke run.')
  if config is not None:
    raise ConfigError(f'--config is not used with --workdir={workdir}: the run\'s own config.json describes its '
                      f'model; drop --config (or pass --init=random to build a random model from it).')
  if not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} is not a directory: pass a run directory written by gpt_jax.train or an '
                      f'export_params directory.')
  config = ckpt.load_config(workdir)
  warn_about_platform(config)
  mesh = inference_mesh(config, mesh_spec, *mesh_flag)
  module = gm.GPTLM(config.model)
  params, step = ckpt.load_for_inference(workdir, gs.abstract_params(gm.abstract_variables(module)['params'], mesh))
  return config, module, params, step, mesh
