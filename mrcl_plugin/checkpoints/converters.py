"""MRCL or MAE pretraining checkpoint -> the encoder alone, for other code
bases.

Sources (:func:`pretrained_encoder`): an MRCL pretraining checkpoint (what
it is read from its ``meta['mrcl']``); mmpretrain's MAE pretraining
checkpoint (``type='MAE'`` in its saved config, the encoder under
``backbone.``); MAE's official release (the
``model`` key, timm's names: ``patch_embed.proj``, ``blocks.i.attn.qkv``,
``norm``, ...). All three give the same encoder file; an MAE one says so in
its meta (``learner='mae'``), so a benchmark run from it is MAE's, not
MRCL's. An MRCL checkpoint written by the DeepSpeed config is a folder
(``epoch_N.pth/``): its fp32 master weights are read from its ZeRO slices
(:mod:`mrcl_plugin.checkpoints.zero`).

- :func:`to_mmpretrain`: mmpretrain's ``VisionTransformer`` keys, which
  mmseg and mmdet load through ``mmpretrain.VisionTransformer``.
- :func:`to_timm`: timm's ``VisionTransformer`` keys (the inverse of the
  renames in mmpretrain's own ``deit3_to_mmpretrain.py``).
- :func:`convert_file`: either one, checked by a strict load into the target
  class and written atomically; the ``tools/model_converters`` scripts.
"""
import re
from collections import Counter
from typing import Any, Dict, List, Tuple

import torch

from .atomic import atomic_path
from .config_text import config_data, config_part
from .meta import (BACKBONE_PREFIX, VIT_KEYS, backbone_tensors,
                   encoder_geometry, key_mismatches, mrcl_backbone,
                   saved_model_type)
from .reader import CheckpointError, load_checkpoint_file
from .zero import is_zero_checkpoint, load_zero_checkpoint

ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')

# mmpretrain VisionTransformer -> timm VisionTransformer, first match wins.
# The final norm is mmpretrain's top-level ``ln1`` (``final_norm=True``).
TIMM_RENAMES = (
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln([12])\.', r'blocks.\1.norm\2.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^layers\.', 'blocks.'),
    (r'^ln1\.', 'norm.'),
)
# ... and back, for MAE's release; keys of neither (its decoder) stay out.
MMPRETRAIN_RENAMES = (
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^blocks\.(\d+)\.norm([12])\.', r'layers.\1.ln\2.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'),
    (r'^blocks\.', 'layers.'),
    (r'^norm\.', 'ln1.'),
)
# timm's registered ViTs: (embed_dims, num_layers, num_heads, ffn) -> size.
TIMM_SIZES = {
    (192, 12, 3, 768): 'tiny',
    (384, 12, 6, 1536): 'small',
    (768, 12, 12, 3072): 'base',
    (1024, 24, 16, 4096): 'large',
    (1280, 32, 16, 5120): 'huge',
}


def timm_key(key: str) -> str:
    """The timm name of an mmpretrain ``VisionTransformer`` key; a key with
    no timm counterpart comes back unchanged (the strict check names it)."""
    for pattern, repl in TIMM_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return key


def to_mmpretrain(path: str) -> Dict[str, Any]:
    """The encoder of the MRCL or MAE checkpoint at ``path`` as an mmpretrain
    ``VisionTransformer`` checkpoint: ``state_dict`` with its keys (no
    ``backbone.`` prefix) and ``meta``: the encoder's arch and sizes,
    learner, mask ratio, iteration, ``left_over`` (tensors not exported,
    counted by module) and ``source``. mmseg/mmdet load it through
    mmpretrain's ``VisionTransformer`` with
    ``init_cfg=dict(type='Pretrained', ...)``."""
    return _convert(path, 'mmpretrain')[0]


def to_timm(path: str) -> Dict[str, Any]:
    """The encoder of the MRCL or MAE checkpoint at ``path`` in timm's
    ``VisionTransformer`` layout: ``state_dict`` and the ``meta`` of
    :func:`to_mmpretrain` plus what builds the model: ``timm_kwargs``
    (``VisionTransformer(**timm_kwargs)``, no head), ``timm_model`` (the
    registered name of a standard arch, such as ``vit_base_patch16_224``,
    else None) and ``pretrained_cfg`` (the pretraining's mean/std on 0-1
    pixels and input size, for ``timm.data.resolve_data_config``)."""
    return _convert(path, 'timm')[0]


def pretrained_encoder(ckpt: Dict, path: str) -> Tuple[Dict, Dict, Dict]:
    """The encoder of an MRCL or MAE pretraining checkpoint.

    Returns:
        tuple: the encoder's tensors with mmpretrain ``VisionTransformer``
        names; what is known of it (``mrcl_backbone``'s meta; ``learner``
        is ``'mae'`` for MAE); the source name of each tensor.

    Raises:
        CheckpointError: it is none of the three layouts.
    """
    if 'state_dict' not in ckpt and isinstance(ckpt.get('model'), dict):
        return _mae_release(ckpt['model'], path)
    if saved_model_type(ckpt) == 'MAE' and 'state_dict' in ckpt:
        backbone = backbone_tensors(
            ckpt['state_dict'], path,
            'an mmpretrain MAE checkpoint without a ViT encoder')
        meta = _mae_meta(encoder_geometry(backbone, path))
        meta.update(_mae_config(ckpt), iter=ckpt['meta'].get('iter'))
    else:
        backbone, meta = mrcl_backbone(ckpt, path)
    return backbone, meta, {k: BACKBONE_PREFIX + k for k in backbone}


def mmpretrain_key(key: str) -> str:
    """The mmpretrain name of a timm ``VisionTransformer`` key (the inverse
    of :func:`timm_key`); None for a key of no encoder (MAE's decoder)."""
    if key in ('cls_token', 'pos_embed'):
        return key
    for pattern, repl in MMPRETRAIN_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def _mae_release(model: Dict, path: str) -> Tuple[Dict, Dict, Dict]:
    """MAE's official pretraining file: timm's names, renamed by
    :func:`mmpretrain_key`; its decoder is left over."""
    source = {mmpretrain_key(k): k for k in model if mmpretrain_key(k)}
    backbone = {k: model[src] for k, src in source.items()}
    missing = [k for k in VIT_KEYS if k not in backbone]
    if missing:
        raise CheckpointError(
            path, f"not an MAE release: its 'model' has no "
            f'{timm_key(missing[0])}')
    meta = _mae_meta(encoder_geometry(backbone, path))
    return backbone, meta, source


def _mae_meta(geometry: Dict) -> Dict:
    """An MAE encoder's meta: no tensor shape says the heads, so timm's
    standard sizes give them (ViT-B: 12), else 64-wide heads."""
    dims = geometry['embed_dims']
    heads = {(e, n, f): h for (e, n, h, f) in TIMM_SIZES}.get(
        (dims, geometry['num_layers'], geometry['feedforward_channels']),
        dims // 64 if dims % 64 == 0 else 1)
    return dict(geometry, num_heads=heads, learner='mae')


def _mae_config(ckpt: Dict) -> Dict:
    """What the config mmengine saved in an mmpretrain MAE checkpoint says
    beyond its tensors: ``mask_ratio`` and the pixel ``mean`` and ``std``
    (0-255), where it has them."""
    cfg = config_data(ckpt['meta'].get('cfg') or '')
    model = config_part(cfg, 'model')
    found = dict(mask_ratio=config_part(model, 'backbone').get('mask_ratio'))
    for where in (model.get('data_preprocessor'),
                  cfg.get('data_preprocessor')):
        if isinstance(where, dict) and 'mean' in where and 'std' in where:
            found.update(mean=list(where['mean']), std=list(where['std']))
            break
    return found


def _convert(path: str, target: str) -> Tuple[Dict, List[Tuple[str, str]]]:
    """The converted checkpoint and its (source key, new key) pairs."""
    ckpt = (load_zero_checkpoint(path) if is_zero_checkpoint(path) else
            load_checkpoint_file(path))
    backbone, meta, source = pretrained_encoder(ckpt, str(path))
    rename = timm_key if target == 'timm' else (lambda key: key)
    state = {rename(k): v for k, v in backbone.items()}
    pairs = [(source[k], rename(k)) for k in backbone]
    used = set(source.values())
    left_over = Counter(
        k.split('.')[0] for k in ckpt.get('state_dict', ckpt.get('model'))
        if k not in used)
    meta = dict(meta, arch={k: meta[k] for k in ARCH_KEYS},
                left_over=dict(left_over), source=str(path))
    if target == 'timm':
        meta.update(_timm_meta(meta))
    return dict(state_dict=state, meta=meta), pairs


def _timm_meta(meta: Dict) -> Dict:
    img, patch = meta['img_size'], meta['patch_size']
    kwargs = dict(
        img_size=img,
        patch_size=patch,
        embed_dim=meta['embed_dims'],
        depth=meta['num_layers'],
        num_heads=meta['num_heads'],
        mlp_ratio=meta['feedforward_channels'] / meta['embed_dims'],
        num_classes=0,  # no head: the class token after the final norm
        global_pool='token')
    size = TIMM_SIZES.get(tuple(meta[k] for k in ARCH_KEYS))
    name = f'vit_{size}_patch{patch}_{img}' if size else None
    try:
        import timm
        name = name if name and timm.is_model(name) else None
    except ImportError:  # the name stays a guess until timm checks it
        pass
    pretrained_cfg = dict(input_size=(3, img, img))
    for key in ('mean', 'std'):  # the pretraining's, on 0-255 pixels
        if meta.get(key):
            pretrained_cfg[key] = tuple(
                round(float(v) / 255, 6) for v in meta[key])
    return dict(timm_model=name, timm_kwargs=kwargs,
                pretrained_cfg=pretrained_cfg)


def target_model(meta: Dict, target: str) -> torch.nn.Module:
    """The model class a converted checkpoint is for, built from its meta:
    mmpretrain's ``VisionTransformer`` or timm's (no weights downloaded)."""
    if target == 'timm':
        from timm.models.vision_transformer import VisionTransformer
        return VisionTransformer(**meta['timm_kwargs'])
    from mmpretrain.models import VisionTransformer
    return VisionTransformer(
        arch=meta['arch'],
        img_size=meta['img_size'],
        patch_size=meta['patch_size'])


def check_strict(ckpt: Dict, target: str, path: str) -> None:
    """Raise a one-line :class:`CheckpointError` naming the missing,
    unexpected and mis-shaped keys unless ``ckpt['state_dict']`` loads
    strictly into :func:`target_model`."""
    model = target_model(ckpt['meta'], target)
    problems = key_mismatches(model.state_dict(), ckpt['state_dict'], 4)
    if problems:
        raise CheckpointError(
            path, f'the converted encoder does not load strictly into '
            f'{type(model).__module__}.{type(model).__name__}: '
            f"{'; '.join(problems)} (--no-strict writes it anyway)")
    model.load_state_dict(ckpt['state_dict'], strict=True)


def convert_file(src: str, dst: str, target: str,
                 strict: bool = True) -> str:
    """Convert the MRCL or MAE checkpoint ``src`` for ``target``
    ('mmpretrain' or 'timm'), check it loads strictly (unless
    ``strict=False``), write it to ``dst`` and return a report of the keys
    converted and left over.

    Raises:
        CheckpointError: ``src`` is not an MRCL or MAE checkpoint, or the
            strict check failed; nothing is written then.
    """
    ckpt, pairs = _convert(src, target)
    if strict:
        check_strict(ckpt, target, str(src))
    with atomic_path(dst) as partial:  # no half-written dst
        torch.save(ckpt, partial)
    meta = ckpt['meta']
    lines = [f'converted {len(pairs)} tensors of the encoder '
             f'({meta["num_layers"]} layers, {{i}} = 0..'
             f'{meta["num_layers"] - 1}):']
    lines += [f'  {src_key} -> {dst_key}' for src_key, dst_key in
              dict.fromkeys(_per_layer(p) for p in pairs)]
    left_over = meta['left_over']
    lines.append(f'left over, not exported ({sum(left_over.values())} '
                 'tensors of the pretraining-only modules):' if left_over
                 else 'left over: none')
    lines += [f'  {module}.*: {n}' for module, n in left_over.items()]
    lines.append(f'strict load into the {target} VisionTransformer: '
                 + ('ok' if strict else 'skipped (--no-strict)'))
    lines.append(f'wrote {dst}')
    return '\n'.join(lines)


def _per_layer(pair: Tuple[str, str]) -> Tuple[str, str]:
    """``layers.3.`` / ``blocks.3.`` -> ``{i}``: one line per kind of key."""
    return tuple(
        re.sub(r'\b(layers|blocks)\.\d+\.', r'\1.{i}.', k, count=1)
        for k in pair)


def main(target: str, argv: List[str] = None) -> int:
    """The command line of ``tools/model_converters/mrcl2<target>.py``:
    ``SRC DST [--no-strict]``; a refused file is one line on stderr and
    exit status 1."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(
        description=f'Export the encoder of an MRCL or MAE (mmpretrain or '
        f'official release) pretraining checkpoint in the {target} '
        'VisionTransformer layout, checked by a strict load '
        'into that class (no weights are downloaded).')
    parser.add_argument(
        'src', help='MRCL or MAE pretraining checkpoint (a DeepSpeed one is '
        'its folder)')
    parser.add_argument('dst', help='where to write the converted file')
    parser.add_argument(
        '--no-strict', action='store_true',
        help='write it even if it does not load strictly into the model')
    args = parser.parse_args(argv)
    try:
        print(convert_file(args.src, args.dst, target, not args.no_strict))
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except OSError as e:
        print(f'error: cannot write {args.dst}: {e.strerror or e}',
              file=sys.stderr)
        return 1
    return 0
