"""Save what a pretrained MRCL model reconstructs from masked views.

    python tools/analysis_tools/visualize_reconstruction.py CONFIG CHECKPOINT \
        --out work_dirs/demo/reconstruction.png [--mask-ratio 0.5]

Rows: the view, the visible patches the encoder sees (masked ones grey), the
decoder's prediction of every patch, and the prediction with the visible
patches pasted back. Images are the first of each class of the test split
next to the config's pretraining data.
"""
import argparse
import os
import os.path as osp
import warnings

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope

import mrcl_plugin  # noqa: F401
from mrcl_plugin.checkpoints import (BACKBONE_PREFIX, CheckpointError,
                                     load_checkpoint, state_dict_of)
from mrcl_plugin.evaluation import balanced_subset, build_model, split_dataset

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--mask-ratio', type=float, default=None,
                        help="defaults to the config's")
    parser.add_argument('--num-images', type=int, default=10)
    parser.add_argument('--scale', type=int, default=4,
                        help='upscaling of each image in the grid')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def to_uint8(x, mean, std):
    """(B, 3, H, W) normalised RGB -> list of (H, W, 3) uint8 BGR."""
    x = (x * std + mean).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return [img[..., ::-1] for img in x]


@torch.no_grad()
def main():
    args = parse_args()
    if not args.out.endswith('.png'):
        raise SystemExit(f'--out must be a .png file, got {args.out}')
    if args.mask_ratio is not None and not 0 <= args.mask_ratio < 1:
        raise SystemExit(f'error: --mask-ratio {args.mask_ratio}: must be in '
                         '[0, 1), the share of patches the encoder does not '
                         'see')
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if args.mask_ratio is not None:
        cfg.model.backbone.mask_ratio = args.mask_ratio
    if not cfg.model.get('decoder'):
        raise SystemExit(f'{args.config} has no decoder: nothing to show')
    try:
        # the weights-only reader's own errors first; an encoder-only file
        # would load into the backbone and leave the decoder random
        state = state_dict_of(load_checkpoint(args.checkpoint),
                              args.checkpoint)
        if not any(k.startswith(BACKBONE_PREFIX) for k in state):
            raise SystemExit(
                f'error: {args.checkpoint}: an encoder-only checkpoint, with '
                'no decoder to reconstruct with; give the pretraining '
                'checkpoint it was converted from (work_dirs/<run>/'
                'iter_N.pth)')
        model = build_model(cfg, args.checkpoint)
    except CheckpointError as e:
        raise SystemExit(f'error: {e}')

    dataset = split_dataset(cfg.train_dataloader.dataset.data_root, 'test')
    indices = balanced_subset(dataset, 1)
    data = default_collate([dataset[i] for i in indices[:args.num_images]])
    x = model.data_preprocessor(data)['inputs']
    torch.manual_seed(args.seed)
    latent, mask, ids_restore = model.backbone(x)
    pred = model.decoder(latent, ids_restore)
    head = model.rec_head
    target = head.patchify(x)
    if head.norm_pix:  # undo the per-patch normalisation of the targets
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.e-6)**.5 + mean
    visible = mask.unsqueeze(-1) == 0
    rows = [
        x,
        head.unpatchify(torch.where(visible, target, torch.zeros_like(target))),
        head.unpatchify(pred),
        head.unpatchify(torch.where(visible, target, pred)),
    ]
    mean = model.data_preprocessor.mean.view(1, 3, 1, 1)
    std = model.data_preprocessor.std.view(1, 3, 1, 1)
    # the preprocessor turned BGR into RGB: the grid is written as BGR
    grid = np.concatenate([
        np.concatenate(to_uint8(row, mean, std), axis=1) for row in rows
    ])
    grid = mmcv.imrescale(grid, args.scale, interpolation='nearest')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(grid, args.out)
    r = model.backbone.mask_ratio
    print(f'reconstruction of {len(x)} test images at mask ratio {r} '
          f'written to {args.out} (rows: view, visible patches, '
          f'prediction, prediction + visible)')


if __name__ == '__main__':
    main()
