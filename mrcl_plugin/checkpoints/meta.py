"""What an MRCL checkpoint says it is: ``meta['mrcl']``, and the encoder.

:class:`mrcl_plugin.engine.hooks.MRCLMetaHook` writes the model's
:meth:`MRCL.describe` into each checkpoint's ``meta['mrcl']``;
:func:`mrcl_meta_problem` is its schema (checked by the reader for every
file), :func:`mrcl_backbone` reads the encoder it describes. The learners
are the table :data:`mrcl_plugin.models.algorithms.LEARNERS`.
"""
from numbers import Real
from typing import Any, Dict, List, Optional, Tuple

import torch

from .config_text import config_data, config_part
from .reader import CheckpointError, a_kind

BACKBONE_PREFIX = 'backbone.'
# Keys every MRCLViT (and so every mmpretrain VisionTransformer) has.
VIT_KEYS = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
            'layers.0.attn.qkv.weight')
ENCODER_KEYS = ('embed_dims', 'num_layers', 'num_heads',
                'feedforward_channels', 'patch_size', 'img_size')


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(map(_is_number, v))


# meta['mrcl'] key -> (what it must be, the check); absent keys pass here.
SCHEMA = dict(
    type=('a class name', lambda v: isinstance(v, str)),
    learner=('a learner name', lambda v: isinstance(v, str)),
    mask_ratio=('a number in [0, 1)', lambda v: _is_number(v) and 0 <= v < 1),
    mask_generator=('a class name', lambda v: isinstance(v, str)),
    rec_weights=('None or dict(alpha=, lambd=) of numbers', lambda v: v is None
                 or isinstance(v, dict) and set(v) == {'alpha', 'lambd'}
                 and all(map(_is_number, v.values()))),
    contrastive_weight=('a number', _is_number),
    feature=('a name', lambda v: isinstance(v, str)),
    encoder=(f'a dict of the integers {", ".join(ENCODER_KEYS)}',
             lambda v: isinstance(v, dict) and all(
                 type(v.get(k)) is int and v[k] > 0 for k in ENCODER_KEYS)),
    mean=('None or a list of numbers', lambda v: v is None or _numbers(v)),
    std=('None or a list of numbers', lambda v: v is None or _numbers(v)),
    max_iters=('an integer', lambda v: type(v) is int),
    max_epochs=('an integer', lambda v: type(v) is int),
)


def mrcl_meta_problem(mrcl: Any) -> Optional[str]:
    """What is wrong with a ``meta['mrcl']`` (e.g. ``"'mask_ratio' is a
    Tensor, not a number in [0, 1)"``), or None where each key it has is
    of :data:`SCHEMA`'s kind."""
    if not isinstance(mrcl, dict):
        return f'is {a_kind(mrcl)}, not a dict'
    for key, (kind, ok) in SCHEMA.items():
        if key in mrcl and not ok(mrcl[key]):
            value = mrcl[key]
            shown = repr(value)[:40] if isinstance(
                value, (str, Real, type(None))) else a_kind(value)
            return f"'{key}' is {shown}, not {kind}"
    return None


def saved_model_type(ckpt: Dict[str, Any]) -> Optional[str]:
    """The model class a checkpoint was saved from (no registry scope):
    ``meta['mrcl']['type']``, else the ``model`` type of the config mmengine
    saves in ``meta['cfg']``; None if neither says."""
    meta = ckpt.get('meta')
    meta = meta if isinstance(meta, dict) else {}
    mrcl = meta.get('mrcl')
    if isinstance(mrcl, dict) and isinstance(mrcl.get('type'), str):
        return mrcl['type']
    cfg = meta.get('cfg')
    kind = config_part(config_data(cfg if isinstance(cfg, str) else ''),
                       'model').get('type')
    return kind.rsplit('.', 1)[-1] if isinstance(kind, str) else None


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
        ``learner``, ``mask_ratio``, ``rec_weights``, ``mean``, ``std``,
        ``max_epochs`` or ``max_iters``, ``iter``.

    Raises:
        CheckpointError: it is not an MRCL pretraining checkpoint, or its
            tensors are not the encoder its meta describes.
    """
    state = ckpt.get('state_dict')
    if not isinstance(state, dict):
        raise CheckpointError(
            path, "not an MRCL checkpoint: no 'state_dict' (keys: "
            f'{sorted(ckpt)[:8]})')
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    mrcl = meta.get('mrcl')
    # any learner: one defined outside this package (docs/extending.md)
    # converts as the package's do
    if not isinstance(mrcl, dict) or not isinstance(
            mrcl.get('learner'), str) or 'encoder' not in mrcl:
        kind = saved_model_type(ckpt)
        raise CheckpointError(
            path, "not an MRCL checkpoint: no meta['mrcl'] (MRCLMetaHook "
            'writes it; ' +
            (f'this is a checkpoint of {kind})' if kind else
             'its meta names no model)'))
    backbone = backbone_tensors(state, path, 'not an MRCL checkpoint')
    encoder = mrcl['encoder']
    geometry = encoder_geometry(backbone, path)
    wrong = [f'{k} {geometry[k]} (meta: {encoder[k]})' for k in geometry
             if encoder.get(k) != geometry[k]]
    if wrong:
        raise CheckpointError(
            path, f"its tensors are not the encoder its meta['mrcl'] "
            f"describes: {', '.join(wrong)}")
    if encoder['embed_dims'] % encoder['num_heads']:
        raise CheckpointError(
            path, f"meta['mrcl'] has {encoder['num_heads']} heads, which "
            f"do not divide embed_dims {encoder['embed_dims']}")
    iteration = meta.get('iter')
    info = dict(encoder, learner=mrcl['learner'],
                iter=iteration if type(iteration) is int else None)
    for key in ('mask_ratio', 'rec_weights', 'mean', 'std', 'max_epochs',
                'max_iters'):
        if key in mrcl:
            info[key] = mrcl[key]
    return backbone, info


def state_dict_of(ckpt: Dict[str, Any], path: str) -> Dict[str, torch.Tensor]:
    """A checkpoint's ``state_dict``, or the checkpoint itself where it is
    a bare state dict (all tensors, as ``torch.save(model.state_dict())``
    writes).

    Raises:
        CheckpointError: it has neither.
    """
    if 'state_dict' in ckpt:
        return ckpt['state_dict']  # a dict of tensors: check_layout
    other = next((k for k, v in ckpt.items()
                  if not isinstance(v, torch.Tensor)), None)
    if other is not None or not ckpt:
        raise CheckpointError(
            path, "no 'state_dict', and it is no bare state dict either "
            f'(keys: {sorted(ckpt)[:6]})')
    return ckpt


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


def encoder_geometry(backbone: Dict[str, torch.Tensor],
                     path: str = '') -> Dict[str, int]:
    """What a ViT's tensors say of it: ``embed_dims``, ``num_layers``,
    ``feedforward_channels``, ``patch_size``, ``img_size`` (not the heads,
    which no tensor shape shows).

    Raises:
        CheckpointError: the tensors have other shapes than a ViT's.
    """
    proj = backbone['patch_embed.projection.weight']  # (C, 3, P, P)
    fc1 = backbone.get('layers.0.ffn.layers.0.0.weight')  # (F, C)
    pos = backbone['pos_embed']  # (1, 1 + N, C)
    if proj.dim() != 4 or pos.dim() != 3 or fc1 is None or fc1.dim() != 2:
        raise CheckpointError(
            path, 'its encoder tensors are not a ViT\'s: patch_embed '
            f'{tuple(proj.shape)}, pos_embed {tuple(pos.shape)}, layer 0 '
            f'ffn {None if fc1 is None else tuple(fc1.shape)}')
    grid = int(round((pos.shape[1] - 1)**0.5))
    layers = 1 + max(
        int(k.split('.')[1]) for k in backbone
        if k.startswith('layers.') and k.split('.')[1].isdigit())
    # each layer has its tensors: the model built from these numbers is no
    # larger than the file
    missing = next((i for i in range(layers)
                    if f'layers.{i}.attn.qkv.weight' not in backbone), None)
    if missing is not None:
        raise CheckpointError(
            path, f'its encoder has layers.{layers - 1} but no '
            f'layers.{missing}.attn.qkv.weight')
    return dict(
        embed_dims=proj.shape[0],
        num_layers=layers,
        feedforward_channels=fc1.shape[0],
        patch_size=proj.shape[-1],
        img_size=grid * proj.shape[-1])


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
