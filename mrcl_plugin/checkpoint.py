"""Checkpoints are data: read them with ``torch.load(weights_only=True)``.

mmengine's checkpoints pickle a few classes besides tensors (its
``HistoryBuffer`` and numpy arrays and scalars in ``message_hub``), which
torch's weights-only unpickler refuses by default. :func:`load_checkpoint_file`
allows exactly those, so every checkpoint mmengine writes loads, and anything
else a pickle names (``os.system``, an arbitrary class) is refused before it
runs. Each failure is one :class:`CheckpointError` line naming the file and
what is wrong with it. Files are written through :func:`atomic_path`, so
none is ever half-written, and :func:`latest_checkpoint` finds the one to
resume even when mmengine's ``last_checkpoint`` is torn. What an MRCL
checkpoint is (learner, mask ratio, encoder) is in its ``meta['mrcl']``
(:func:`mrcl_backbone`); a saved config is parsed as data
(:func:`config_data`), never run.
"""
import ast
import os
import os.path as osp
import pickle
import re
import warnings
import zipfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

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


# The names mmengine's CheckpointHook gives (filename_tmpl's default).
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` continues from, or None if there is none.

    mmengine resumes from the file ``work_dir/last_checkpoint`` names, which
    it writes in place after each checkpoint: a kill at that instant leaves
    it empty or torn, and a checkpoint removed by hand leaves it naming a
    missing file. Then this falls back, with a warning, to the newest
    ``iter_N.pth`` or ``epoch_N.pth`` in the work_dir (whole: the configs
    write them through :class:`mrcl_plugin.fileio.AtomicLocalBackend`).
    """
    from mmengine.logging import print_log
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    steps = sorted((int(m.group(1)), name) for name in os.listdir(work_dir)
                   for m in [CHECKPOINT_NAME.match(name)] if m) \
        if osp.isdir(work_dir) else []
    if not steps:
        return None
    newest = osp.join(work_dir, steps[-1][1])
    if osp.isfile(pointer):
        problem = (f'names {named}, which is missing' if named else 'is empty')
        print_log(f'{pointer} {problem}; resuming from the newest '
                  f'checkpoint, {newest}', logger='current', level=30)
    return newest


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


def load_checkpoint_file(path: str, map_location='cpu',
                         stand_ins: Sequence[Tuple[Any, str]] = ()
                         ) -> Dict[str, Any]:
    """Load a checkpoint file weights-only; ``stand_ins`` are
    ``(object, 'module.Name')`` pairs that the file's pickle may name
    besides :func:`safe_globals` (built as ``object``, never imported).

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
        allowed = [*safe_globals(), *stand_ins]
        with torch.serialization.safe_globals(allowed), \
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


def _data(node: ast.AST) -> Any:
    """A config expression as data: literals, lists, tuples, ``{...}`` and
    ``dict(k=v, ...)``; anything else raises ValueError."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == 'dict' and not node.args:
        return {kw.arg: _data(kw.value) for kw in node.keywords if kw.arg}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_data(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_data(k): _data(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def config_data(text: str) -> Dict[str, Any]:
    """The top-level ``name = value`` of a config's text whose value is data
    (as mmengine dumps a config: ``dict(...)``, lists, literals), parsed
    with :mod:`ast`: a config is code, and it is read here, never run. Other
    assignments are left out; text that does not parse gives {}."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = _data(node.value)
            except (ValueError, TypeError, SyntaxError):
                pass
    return found


def config_part(cfg: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    """``cfg[k1][k2]...`` of :func:`config_data`'s dict, {} where a level is
    missing or not a dict."""
    for key in keys:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def saved_model_type(ckpt: Dict[str, Any]) -> Optional[str]:
    """The model class a checkpoint was saved from (no registry scope):
    ``meta['mrcl']['type']``, else the ``model`` type of the config mmengine
    saves in ``meta['cfg']``; None if neither says."""
    meta = ckpt.get('meta') or {}
    if isinstance(meta.get('mrcl'), dict):
        return meta['mrcl'].get('type')
    kind = config_part(config_data(meta.get('cfg') or ''), 'model').get('type')
    return kind.rsplit('.', 1)[-1] if isinstance(kind, str) else None


# The MRCL algorithm classes, by the contrastive learner each extends.
MRCL_CLASSES = dict(barlowtwins='MRBarlowTwins', simclr='MRSimCLR',
                    byol='MRBYOL', mocov3='MRMoCoV3')


def mrcl_backbone(ckpt: Dict[str, Any],
                  path: str) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """The encoder of an MRCL pretraining checkpoint.

    Args:
        ckpt (dict): as returned by :func:`load_checkpoint_file`.
        path (str): the file, for messages.

    Returns:
        tuple: the ``backbone.`` tensors with the prefix removed
        (mmpretrain's ``VisionTransformer`` names), and what the checkpoint
        says it is (``meta['mrcl']``, written by ``MRCLMetaHook``): the
        encoder's ``embed_dims``, ``num_layers``, ``num_heads``,
        ``feedforward_channels``, ``patch_size``, ``img_size``, and
        ``variant`` (the learner), ``mask_ratio``, ``rec_weights``,
        ``mean``, ``std``, ``max_epochs`` or ``max_iters``, ``iter``.

    Raises:
        CheckpointError: it is not an MRCL pretraining checkpoint, or its
            tensors are not the encoder its meta describes.
    """
    state = ckpt.get('state_dict')
    if not isinstance(state, dict):
        raise CheckpointError(
            path, "not an MRCL checkpoint: no 'state_dict' (keys: "
            f'{sorted(ckpt)[:8]})')
    meta = ckpt.get('meta') or {}
    mrcl = meta.get('mrcl')
    if not isinstance(mrcl, dict) or mrcl.get('learner') not in MRCL_CLASSES:
        kind = saved_model_type(ckpt)
        raise CheckpointError(
            path, "not an MRCL checkpoint: no meta['mrcl'] (MRCLMetaHook "
            'writes it; ' +
            (f'this is a checkpoint of {kind})' if kind else
             'its meta names no model)'))
    backbone = backbone_tensors(state, path, 'not an MRCL checkpoint')
    encoder = mrcl['encoder']
    geometry = encoder_geometry(backbone)
    wrong = [f'{k} {geometry[k]} (meta: {encoder[k]})' for k in geometry
             if encoder.get(k) != geometry[k]]
    if wrong:
        raise CheckpointError(
            path, f"its tensors are not the encoder its meta['mrcl'] "
            f"describes: {', '.join(wrong)}")
    info = dict(encoder, variant=mrcl['learner'], iter=meta.get('iter'))
    for key in ('mask_ratio', 'rec_weights', 'mean', 'std', 'max_epochs',
                'max_iters'):
        if key in mrcl:
            info[key] = mrcl[key]
    return backbone, info


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


def encoder_geometry(backbone: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """What a ViT's tensors say of it: ``embed_dims``, ``num_layers``,
    ``feedforward_channels``, ``patch_size``, ``img_size`` (not the heads,
    which no tensor shape shows)."""
    proj = backbone['patch_embed.projection.weight']  # (C, 3, P, P)
    grid = int(round((backbone['pos_embed'].shape[1] - 1)**0.5))
    return dict(
        embed_dims=proj.shape[0],
        num_layers=1 + max(
            int(k.split('.')[1]) for k in backbone
            if k.startswith('layers.')),
        feedforward_channels=backbone['layers.0.ffn.layers.0.0.weight']
        .shape[0],
        patch_size=proj.shape[-1],
        img_size=grid * proj.shape[-1])
