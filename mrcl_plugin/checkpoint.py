"""Checkpoints are data: read them with ``torch.load(weights_only=True)``.

mmengine's checkpoints pickle a few classes besides tensors (its
``HistoryBuffer`` and numpy arrays and scalars in ``message_hub``), which
torch's weights-only unpickler refuses by default. :func:`load_checkpoint_file`
allows exactly those, so every checkpoint mmengine writes loads, and anything
else a pickle names (``os.system``, an arbitrary class) is refused before it
runs. Each failure is one :class:`CheckpointError` line naming the file and
what is wrong with it. Files are written through :func:`atomic_path`, so
none is ever half-written; the config saved in a checkpoint is read as text
(:func:`saved_config`, :func:`config_values`), never run.
"""
import os
import os.path as osp
import pickle
import re
import warnings
import zipfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

BACKBONE_PREFIX = 'backbone.'
# Keys every MRCLViT (and so every mmpretrain VisionTransformer) has.
VIT_KEYS = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
            'layers.0.attn.qkv.weight')
PARTIAL_SUFFIX = '.part'  # .iter_4.pth.part: written, not yet renamed


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` (``.NAME.part``) to write, renamed
    to ``path`` (``os.replace``, atomic on one file system) once the block
    completes and removed if it fails: a kill or a full disk leaves the
    previous ``path`` as it was, and nothing half-written under its name."""
    folder, name = osp.split(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = osp.join(folder, f'.{name}{PARTIAL_SUFFIX}')
    try:
        yield partial
        fd = os.open(partial, os.O_RDONLY)
        try:  # on disk before the rename makes it the file
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line:
    ``<file>: <what is wrong>``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'{path}: {reason}')
        self.path, self.reason = path, reason


def _history_buffer_statistic(owner: Any, name: str) -> Any:
    """Stands in for ``getattr`` while unpickling: a ``HistoryBuffer``
    pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``;
    a real ``getattr`` would reach any attribute of any allowed object (e.g.
    ``ndarray.tofile``), so only those methods resolve. Its four built-in
    ones are listed by name: ``_statistics_methods`` is empty in a process
    that has not yet made a ``HistoryBuffer`` (e.g. a fresh ``--resume``)."""
    from mmengine.logging import HistoryBuffer
    builtin = ('min', 'max', 'current', 'mean')
    if owner is HistoryBuffer and (name in builtin or
                                   name in HistoryBuffer._statistics_methods):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr({owner!r}, {name!r})')


def safe_globals() -> List[Any]:
    """The non-tensor globals that mmengine 0.10 checkpoints pickle. numpy
    2 names its array and scalar rebuilders ``numpy._core.multiarray.*``,
    numpy 1 ``numpy.core.multiarray.*``: both names are allowed, so a
    checkpoint saved under either loads under either."""
    from mmengine.logging import HistoryBuffer
    dtypes = {type(np.dtype(t)) for t in np.typecodes['All'] if t}
    rebuilders = [(fn, f'numpy.{core}.multiarray.{fn.__name__}')
                  for fn in (np.core.multiarray._reconstruct,
                             np.core.multiarray.scalar)
                  for core in ('core', '_core')]
    return [
        HistoryBuffer, np.ndarray, np.dtype, *rebuilders,
        *sorted(dtypes, key=str),
        (_history_buffer_statistic, 'builtins.getattr')
    ]


def load_checkpoint_file(path: str, map_location='cpu') -> Dict[str, Any]:
    """Load a checkpoint file weights-only.

    Returns:
        dict: the checkpoint as saved (mmengine's has ``state_dict``,
        ``meta``, ``optimizer``, ``message_hub``, ...).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, not a
            torch checkpoint, pickles code or classes a checkpoint never
            holds, or holds something other than a dict.
    """
    path = osp.expanduser(str(path))
    if not osp.isfile(path):
        raise CheckpointError(path, 'no such file')
    try:
        with torch.serialization.safe_globals(safe_globals()), \
                warnings.catch_warnings():
            warnings.simplefilter('ignore')  # pickle-protocol notices
            ckpt = torch.load(path, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r'GLOBAL (\S+(?:\([^)]*\))?)', str(e))
        if unsafe:
            raise CheckpointError(
                path, f'refused: it pickles {unsafe.group(1)}, which no '
                'checkpoint holds (nothing in it was run)') from None
        raise CheckpointError(
            path, 'not a torch checkpoint: cannot be read as data '
            f'({_unpickler_reason(e)}; nothing in it was run)') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            path, f'truncated or corrupt checkpoint ({_first_line(e)})'
        ) from None
    except (IndexError, KeyError, TypeError, ValueError) as e:
        # Arbitrary bytes that begin like a pickle make torch's weights-only
        # unpickler fail in these ways ("pop from empty list", a bad memo
        # key, undecodable text).
        raise CheckpointError(
            path, 'not a torch checkpoint: cannot be read as data '
            f'({type(e).__name__}: {_first_line(e)}; nothing in it was run)'
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            path, f'not a checkpoint: it holds a {type(ckpt).__name__}, '
            'not a dict of tensors')
    return ckpt


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights-only error that says what it met."""
    boilerplate = ('Weights only load failed', 'Please file', 'Check the doc')
    lines = [
        line.split('WeightsUnpickler error:')[-1].strip()
        for line in str(error).splitlines()
        if line.strip() and not line.startswith(boilerplate)
    ]
    return next((line for line in lines if line), _first_line(error))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def key_list(keys: List[str], max_names: int = 8) -> str:
    """'[a, b, c] and 5 more': the first ``max_names`` keys."""
    more = f' and {len(keys) - max_names} more' if len(keys) > max_names \
        else ''
    return '[' + ', '.join(keys[:max_names]) + ']' + more


def key_mismatches(own: Dict[str, torch.Tensor],
                   state: Dict[str, torch.Tensor],
                   max_names: int = 8) -> List[str]:
    """What keeps ``state`` from loading strictly into a module whose own
    state dict is ``own``: its missing keys, unexpected keys and shape
    mismatches, each as 'N missing keys [a, b, ...]'; empty if it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    return [
        f'{len(keys)} {what} {key_list(keys, max_names)}'
        for what, keys in (('missing keys', missing),
                           ('unexpected keys', unexpected),
                           ('shape mismatches (checkpoint vs model)', shapes))
        if keys
    ]


def saved_config(ckpt: Dict[str, Any]) -> str:
    """The config text mmengine saves in a checkpoint's meta; '' if none."""
    cfg = (ckpt.get('meta') or {}).get('cfg')
    return cfg if isinstance(cfg, str) else ''


def config_values(cfg: str, key: str,
                  value: str = r"'?([\w.+-]+)") -> List[str]:
    """Every ``key=value`` in a config's text, in order (``key`` and
    ``value`` are regular expressions; ``value``'s group is returned). A
    config is code: it is read here, never run."""
    return re.findall(rf'\b{key}\s*=\s*{value}', cfg)


# The MRCL algorithm classes, by the contrastive learner each extends. A
# checkpoint saved before the classes were split names ``type='MRCL'`` and
# ``variant='barlowtwins'``; both read the same.
MRCL_CLASSES = dict(barlowtwins='MRBarlowTwins', simclr='MRSimCLR',
                    byol='MRBYOL', mocov3='MRMoCoV3')


def mrcl_variant(cfg: str) -> Optional[str]:
    """The contrastive learner (``'barlowtwins'``, ``'simclr'``, ``'byol'``
    or ``'mocov3'``) of the MRCL model in a config's text, or None if it
    has none."""
    for name in config_values(cfg, 'type', r"'([\w.]+)'"):
        name = name.rsplit('.', 1)[-1]
        for variant, cls in MRCL_CLASSES.items():
            if name == cls:
                return variant
        if name == 'MRCL':  # saved before the split: type='MRCL', variant=
            found = config_values(cfg, 'variant', r"'(\w+)'")
            variant = found[0] if found else 'barlowtwins'  # its default
            return variant if variant in MRCL_CLASSES else None
    return None


def model_types(ckpt: Dict[str, Any]) -> List[str]:
    """The ``type=`` names in the config saved in an mmengine checkpoint."""
    return config_values(saved_config(ckpt), 'type', r"'([\w.]+)'")


def mrcl_backbone(ckpt: Dict[str, Any],
                  path: str) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """The encoder of an MRCL pretraining checkpoint.

    Args:
        ckpt (dict): as returned by :func:`load_checkpoint_file`.
        path (str): the file, for messages.

    Returns:
        tuple: the ``backbone.`` tensors with the prefix removed
        (mmpretrain's ``VisionTransformer`` names), and what is known of
        the encoder: ``embed_dims``, ``num_layers``, ``num_heads``,
        ``feedforward_channels``, ``patch_size``, ``img_size``, ``variant``,
        ``mask_ratio``, ``iter``.

    Raises:
        CheckpointError: it is not an MRCL pretraining checkpoint.
    """
    state = ckpt.get('state_dict')
    if not isinstance(state, dict):
        raise CheckpointError(
            path, "not an MRCL checkpoint: no 'state_dict' (keys: "
            f'{sorted(ckpt)[:8]})')
    if mrcl_variant(saved_config(ckpt)) is None:
        types = model_types(ckpt)
        found = (f"its config names {', '.join(dict.fromkeys(types))}"
                 if types else 'it has no config in its meta')
        raise CheckpointError(
            path, f'not an MRCL checkpoint: no MRCL model ({found})')
    backbone = backbone_tensors(state, path, 'not an MRCL checkpoint')
    return backbone, encoder_meta(backbone, ckpt)


def backbone_tensors(state: Dict[str, torch.Tensor], path: str,
                     what: str) -> Dict[str, torch.Tensor]:
    """The ``backbone.`` tensors of a state dict, the prefix removed.

    Raises:
        CheckpointError: a ViT key is missing; the message starts with
            ``what`` and names the key.
    """
    backbone = {
        k[len(BACKBONE_PREFIX):]: v
        for k, v in state.items() if k.startswith(BACKBONE_PREFIX)
    }
    missing = [k for k in VIT_KEYS if k not in backbone]
    if missing:
        raise CheckpointError(path,
                              f'{what}: no {BACKBONE_PREFIX}{missing[0]}')
    return backbone


def encoder_meta(backbone: Dict[str, torch.Tensor], ckpt: Dict) -> Dict:
    proj = backbone['patch_embed.projection.weight']  # (C, 3, P, P)
    embed_dims, patch = proj.shape[0], proj.shape[-1]
    grid = int(round((backbone['pos_embed'].shape[1] - 1)**0.5))
    num_layers = 1 + max(
        int(k.split('.')[1]) for k in backbone if k.startswith('layers.'))
    cfg = saved_config(ckpt)

    def cfg_value(key, cast):
        found = config_values(cfg, key)
        return cast(found[0]) if found else None

    # A named arch ('b', 'deit-small', 'h': 80-wide heads) is in mmpretrain's
    # arch zoo, a custom one names its heads; ViT-T/S/B/L have 64-wide heads.
    from mmpretrain.models import VisionTransformer
    named = config_values(cfg, 'arch', r"'([\w-]+)'")
    zoo = VisionTransformer.arch_zoo.get(named[0].lower() if named else '')
    num_heads = (zoo['num_heads'] if zoo else cfg_value('num_heads', int)
                 or embed_dims // 64)
    return dict(
        embed_dims=embed_dims,
        num_layers=num_layers,
        num_heads=num_heads,
        feedforward_channels=backbone['layers.0.ffn.layers.0.0.weight']
        .shape[0],
        patch_size=patch,
        img_size=grid * patch,
        variant=mrcl_variant(cfg),
        mask_ratio=cfg_value('mask_ratio', float),
        iter=(ckpt.get('meta') or {}).get('iter'))
