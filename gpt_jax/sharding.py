"""Device mesh from config, THE logical-axis rules table, sharding helpers.

The model only names axes (batch, length, embed, heads, head_dim, mlp, vocab, layers, and act_* for activations).
RULES below is the one place that maps them to mesh axes, so data parallelism, FSDP and tensor parallelism are
chosen by the mesh shape alone: a mesh axis of size 1 simply does nothing.
"""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gpt_jax.config import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')  # the batch dimension of inputs and activations is split over both

RULES = (
    # activations
    ('act_batch', BATCH_AXES),
    ('act_length', None),
    ('act_embed', None),
    ('act_heads', 'tensor'),
    ('act_mlp', 'tensor'),
    ('act_vocab', 'tensor'),
    # parameters (optimizer state follows its parameter)
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('head_dim', None),
    ('mlp', 'tensor'),
    ('layers', None),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
  """(ICI shape, DCN shape) over (data, fsdp, tensor), with the -1 axis inferred; fails clearly on a mismatch."""
  dcn = (mesh_config.dcn_data, mesh_config.dcn_fsdp, 1)
  num_slices = math.prod(dcn)
  if num_devices % num_slices:
    raise ConfigError(f'mesh.dcn_data * mesh.dcn_fsdp = {num_slices} does not divide the {num_devices} devices.')
  per_slice = num_devices // num_slices
  ici = [mesh_config.data, mesh_config.fsdp, mesh_config.tensor]
  known = math.prod(s for s in ici if s != -1)
  if -1 in ici:
    if per_slice % known:
      raise ConfigError(f'mesh (data={ici[0]}, fsdp={ici[1]}, tensor={ici[2]}): the fixed axes (product {known}) '
                        f'do not divide the {per_slice} devices per slice; change the mesh.* sizes.')
    ici[ici.index(-1)] = per_slice // known
  elif known != per_slice:
    raise ConfigError(f'mesh (data={ici[0]}, fsdp={ici[1]}, tensor={ici[2]}) has {known} devices but there are '
                      f'{per_slice} per slice: make the product match or set one axis to -1.')
  return tuple(ici), dcn


def make_mesh(mesh_config, devices=None) -> Mesh:
  """The (data, fsdp, tensor) mesh; with DCN axes > 1 a hybrid multi-slice mesh (ICI within, DCN across)."""
  devices = jax.devices() if devices is None else devices
  ici, dcn = mesh_shape(mesh_config, len(devices))
  if math.prod(dcn) > 1:
    if hasattr(devices[0], 'slice_index') or jax.process_count() > 1:
      # Slices are TPU slices (device.slice_index) or, elsewhere, processes.
      device_array = mesh_utils.create_hybrid_device_mesh(
          ici, dcn, devices, process_is_granule=not hasattr(devices[0], 'slice_index'),
          allow_split_physical_axes=True)
    else:
      device_array = _emulated_hybrid_mesh(ici, dcn, devices)
  else:
    try:
      device_array = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError):
      device_array = np.asarray(devices).reshape(ici)
  return Mesh(device_array, MESH_AXES)


def _emulated_hybrid_mesh(ici, dcn, devices):
  """A hybrid mesh on one host with no slices (CPU tests): contiguous device groups stand in for slices, laid out
  as create_hybrid_device_mesh does (each mesh axis is DCN-major, ICI-minor)."""
  granules = np.asarray(devices).reshape(tuple(dcn) + tuple(ici))  # [dcn0, dcn1, dcn2, ici0, ici1, ici2]
  return granules.transpose(0, 3, 1, 4, 2, 5).reshape([d * i for d, i in zip(dcn, ici)])


def param_shardings(boxed_abstract, mesh: Mesh, rules=RULES):
  """NamedShardings for the (unboxed) params of a boxed abstract pytree, e.g. model.abstract_variables()['params']."""
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_abstract), mesh, list(rules))


def state_shardings(abstract_state, params, shardings, mesh: Mesh):
  """Shardings for a pytree that embeds copies of params (optimizer moments, EMA...): each leaf whose key path ends
  with a parameter's path and has its shape takes that parameter's sharding; everything else is replicated."""
  by_path = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(shardings)):
    by_path[path_keys(path)] = (leaf.shape, sharding)

  def pick(path, leaf):
    keys = path_keys(path)
    for i in range(len(keys)):
      shape, sharding = by_path.get(keys[i:], (None, None))
      if sharding is not None and shape == leaf.shape:
        return sharding
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def path_keys(path) -> tuple[str, ...]:
  """A pytree path (dict keys, attributes, indices) as plain strings."""
  return tuple(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of [batch, length] inputs: rows over the batch axes, replicated over tensor."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch dimension is split: a global batch must be a multiple of this."""
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def single_device_mesh() -> Mesh:
  """A (1, 1, 1) mesh on this process's first device: one-device code runs through the same sharded paths."""
  return Mesh(np.asarray(jax.local_devices()[:1]).reshape(1, 1, 1), MESH_AXES)


def mesh_of(tree) -> Mesh:
  """The mesh a pytree of arrays is sharded on (that of its first NamedSharding), else single_device_mesh()."""
  for leaf in jax.tree.leaves(tree):
    if isinstance(getattr(leaf, 'sharding', None), NamedSharding):
      return leaf.sharding.mesh
  return single_device_mesh()


def global_rows(array, mesh: Mesh) -> jax.Array:
  """A host array that every process holds whole (an evaluation or sampling batch, built identically on each
  host) as a global array with its rows split over the batch axes; rows must be a multiple of batch_shards."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, batch_sharding(mesh), lambda index: array[index])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_host(tree):
  """Every leaf of tree as a numpy array, whole, on every process: THE way results come back to the host.

  A global array sharded over other processes' devices is gathered (every process must call this with the same
  tree, as with any collective); a replicated or process-local one is read directly.
  """
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)


@contextlib.contextmanager
def activation_context(mesh: Mesh, rules=RULES):
  """Context in which the model's activation constraints resolve: `with activation_context(mesh): ...`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield


def with_shardings(tree, shardings):
  """tree's leaves as ShapeDtypeStructs carrying `shardings`: what restores and ahead-of-time lowering take."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_params(boxed_abstract, mesh: Mesh):
  """The unboxed params of a boxed abstract pytree (model.abstract_variables(module)['params']) as sharded
  ShapeDtypeStructs, placed by the rules table on mesh: nothing is allocated."""
  return with_shardings(nn.unbox(boxed_abstract), param_shardings(boxed_abstract, mesh))
