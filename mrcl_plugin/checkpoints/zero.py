"""DeepSpeed ZeRO checkpoint folders, read as data into mmengine's layout.

mmengine's ``DeepSpeedStrategy`` saves ``epoch_N.pth`` (or ``iter_N.pth``)
as a folder of DeepSpeed's own files:

- ``mp_rank_00_model_states.pt``: the module's state dict in its training
  dtype (bf16 under ``bf16``), the shapes of the trainable parameters by
  parameter group (``param_shapes``), the data-parallel world size, and
  mmengine's client state (``meta``, ``message_hub``, ...);
- ``[bf16_]zero_pp_rank_R_mp_rank_00_optim_states.pt``, one per process:
  that process's slice of the flat fp32 master weights of each group
  (``single_partition_of_fp32_groups``) with its optimizer state.

:func:`load_zero_checkpoint` joins the slices as DeepSpeed's own
``zero_to_fp32.py`` does for ZeRO stages 1 and 2, so the trainable
parameters come back as the fp32 master weights, not their bf16 copy;
frozen parameters (MAE's fixed sin-cos position embeddings) and buffers
have no master copy and keep the module's values, in fp32.
:func:`check_zero_folder` reads every file of a folder before DeepSpeed's
own loader, which unpickles whatever the files name, resumes from it.
Here the files load weights-only, and the few DeepSpeed and mmengine
classes they pickle are built as inert stand-ins (nothing of DeepSpeed is
imported or run).
"""
import math
import os
import os.path as osp
import re
from typing import Any, Dict, List, Tuple

import torch

from .reader import CheckpointError, a_kind, load_checkpoint_file

MODEL_STATES = 'mp_rank_00_model_states.pt'
OPTIM_STATES = re.compile(r'^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_00_'
                          r'optim_states\.pt$')


class _Inert:
    """Stands in for a pickled DeepSpeed object (its loss scaler, ZeRO
    stage enum, fragment addresses): keeps the arguments, ignores the
    state."""

    def __init__(self, *args) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        pass


STAND_INS = [
    # mmengine's ConfigDict (the DeepSpeed config) is read as a plain dict
    (dict, 'mmengine.config.config.ConfigDict'),
    (_Inert, 'deepspeed.runtime.fp16.loss_scaler.LossScaler'),
    (_Inert, 'deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler'),
    (_Inert, 'deepspeed.runtime.zero.config.ZeroStageEnum'),
    (_Inert, 'deepspeed.utils.tensor_fragment.fragment_address'),
]


def is_zero_checkpoint(path: str) -> bool:
    return osp.isfile(osp.join(str(path), MODEL_STATES))


def _field(d: Dict, key: str, kind, path: str, what: str = '') -> Any:
    """``d[key]``, which must be a ``kind``; else a one-line error."""
    if key not in d:
        raise CheckpointError(path, f'no {what}{key!r}: not a DeepSpeed '
                              'checkpoint file')
    if not isinstance(d[key], kind) or isinstance(d[key], bool):
        raise CheckpointError(
            path, f'{what}{key!r} is {a_kind(d[key])}, not '
            f'{a_kind(kind)}')
    return d[key]


def _model_states(folder: str) -> Tuple[Dict[str, Any], int]:
    """The folder's model-states file, its fields typed, and its ZeRO
    stage."""
    path = osp.join(folder, MODEL_STATES)
    model = load_checkpoint_file(path, stand_ins=STAND_INS)
    config = model.get('ds_config', {})
    if not isinstance(config, dict) or not isinstance(
            config.get('zero_optimization', {}), dict):
        raise CheckpointError(path, "'ds_config' is not a DeepSpeed config "
                              f'({a_kind(config)})')
    stage = config.get('zero_optimization', {}).get('stage', 0)
    if stage not in (0, 1, 2) or model.get('mp_world_size', 1) != 1:
        raise CheckpointError(
            folder, f'ZeRO stage {stage} with {model.get("mp_world_size")} '
            'model-parallel ranks: only stages 1 and 2 without model '
            "parallelism convert (use DeepSpeed's zero_to_fp32.py first)")
    module = _field(model, 'module', dict, path)
    wrong = next((k for k, v in module.items()
                  if not isinstance(v, torch.Tensor)), None)
    if wrong is not None:
        raise CheckpointError(path, f"'module' holds {a_kind(module[wrong])} "
                              f'under {wrong!r}, not a tensor')
    if stage:
        world = _field(model, 'dp_world_size', int, path)
        if world < 1:
            raise CheckpointError(path, f"'dp_world_size' is {world}")
        shapes = _field(model, 'param_shapes', list, path)
        for group in shapes:
            if not isinstance(group, dict) or not all(
                    isinstance(k, str) and isinstance(s, (torch.Size, tuple))
                    and all(type(n) is int and n >= 0 for n in s)
                    for k, s in group.items()):
                raise CheckpointError(
                    path, "'param_shapes' is not a list of {name: shape}")
    for key in ('meta', 'message_hub', 'shared_params'):
        if not isinstance(model.get(key, {}), dict):
            raise CheckpointError(path, f'{key!r} is {a_kind(model[key])}, '
                                  'not a dict')
    if not all(isinstance(v, str) for v in model.get('shared_params',
                                                     {}).values()):
        raise CheckpointError(path, "'shared_params' is not {name: name}")
    return model, stage


def _rank_files(folder: str, world: int) -> List[str]:
    ranks = {}
    for name in sorted(os.listdir(folder)):
        found = OPTIM_STATES.match(name)
        if found:
            ranks[int(found.group(1))] = osp.join(folder, name)
    if sorted(ranks) != list(range(world)):
        raise CheckpointError(
            folder, f'a ZeRO checkpoint of {world} processes needs their '
            f'optimizer-state files for ranks 0..{world - 1}, found ranks '
            f'{sorted(ranks)}')
    return [ranks[r] for r in range(world)]


def _fp32_slices(path: str, groups: int) -> List[torch.Tensor]:
    """One rank's slices of the flat fp32 master weights, one per group."""
    optim = load_checkpoint_file(path, stand_ins=STAND_INS)
    state = _field(optim, 'optimizer_state_dict', dict, path)
    slices = _field(state, 'single_partition_of_fp32_groups', list, path,
                    "'optimizer_state_dict' ")
    if len(slices) != groups or not all(
            isinstance(s, torch.Tensor) and s.dim() == 1 for s in slices):
        raise CheckpointError(
            path, f'its fp32 slices are not {groups} flat tensors, one per '
            'parameter group')
    return slices


def check_zero_folder(folder: str) -> Dict[str, Any]:
    """Read every file of the ZeRO checkpoint ``folder`` as data, as
    :func:`load_zero_checkpoint` does, before DeepSpeed's own loader (which
    unpickles whatever they name) resumes from it; returns the client
    state (``meta``, ``message_hub``, ...) of its model-states file.

    Raises:
        CheckpointError: a file is not data, or not what DeepSpeed wrote.
    """
    folder = str(folder)
    model, stage = _model_states(folder)
    if stage:
        for path in _rank_files(folder, model['dp_world_size']):
            _fp32_slices(path, len(model['param_shapes']))
    return model


def load_zero_checkpoint(folder: str) -> Dict[str, Any]:
    """The DeepSpeed ZeRO-1/2 checkpoint ``folder`` as an mmengine
    checkpoint: ``state_dict`` (fp32 master weights for the trainable
    parameters, the module's own values for the rest, floats in fp32),
    ``meta`` and ``message_hub``.

    Raises:
        CheckpointError: a file is missing or not data, the checkpoint is
            ZeRO stage 3 or model-parallel, or its slices do not add up to
            its parameter shapes.
    """
    folder = str(folder)
    model, stage = _model_states(folder)
    # bf16/fp16 -> fp32 is exact; the trainable ones are replaced below
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in model['module'].items()}
    if stage:
        world, shapes = model['dp_world_size'], model['param_shapes']
        slices = [_fp32_slices(path, len(shapes))
                  for path in _rank_files(folder, world)]
        for group, group_shapes in enumerate(shapes):
            flat = torch.cat([s[group] for s in slices])
            state.update(_unflatten(flat, group_shapes, world, folder))
    for name, source in model.get('shared_params', {}).items():
        if source not in state:
            raise CheckpointError(folder, f'shared parameter {name!r} names '
                                  f'{str(source)[:40]!r}, which it lacks')
        state[name] = state[source]
    return dict(state_dict=state, meta=model.get('meta', {}),
                message_hub=model.get('message_hub', {}))


def _unflatten(flat: torch.Tensor, shapes: Dict[str, torch.Size],
               world: int, folder: str) -> Dict[str, torch.Tensor]:
    """The parameters of one group from its joined flat fp32 vector. ZeRO-2
    pads a group to a multiple of 2 x world size elements (DeepSpeed's
    ``zero2_align``); anything beyond that padding is a mismatch."""
    def align(n: int) -> int:
        return math.ceil(n / (2 * world)) * 2 * world

    sizes = [math.prod(shape) for shape in shapes.values()]
    if align(sum(sizes)) != align(flat.numel()):
        raise CheckpointError(
            folder, f'its fp32 slices hold {flat.numel()} values, its '
            f'parameter shapes {sum(sizes)}: the files are not of one save')
    params, offset = {}, 0
    for (name, shape), n in zip(shapes.items(), sizes):
        params[name] = flat[offset:offset + n].view(shape).clone()
        offset += n
    return params
