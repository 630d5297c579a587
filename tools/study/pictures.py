"""Pictures of what each arm's patch features do on CamVid: how people
judge dense features.

    python tools/study/pictures.py docs/study/camvid.csv --out docs/study/camvid_pictures

One PNG per arm (its seed-0 run), a row per test image (the first of every
``--every`` of CamVid's test split): the image, the ground truth, the
in-context retrieval prediction (the bank: the study's pooled splits at
its evaluation size, block and temperature), the UperNet prediction (the
arm's fine-tune, tools/study/finetune.py), and a 3-component PCA of the
patch tokens (the components fitted on the tokens of all rows, DINO's
picture). Images and predictions are shown as the dense evaluation sees
them: the centre square, at its size.
"""
import argparse
import glob
import os
import os.path as osp
import re
import sys
from typing import List, Optional, Set, Tuple

import mmcv
import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from dense_report import arm_name, picture_file  # noqa: E402
from instrument import weights  # noqa: E402
from presets import PRESETS, Run  # noqa: E402
from runner import dense_root, planned_runs, read_rows, run_config  # noqa

from mrcl_plugin.evaluation import build_model, load_seg_folder  # noqa
from mrcl_plugin.evaluation.dense import (knn_patch_labels,  # noqa: E402
                                          upsampled_argmax)
from mrcl_plugin.evaluation.patch_tokens import (default_blocks,  # noqa
                                                 patch_features)
from mrcl_plugin.evaluation.seg_data import IGNORE, patch_labels  # noqa

# SegNet's CamVid colours (Scripts/test_segmentation_camvid.py), RGB, in
# classes.txt's order; void black
PALETTE = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128],
                    [128, 64, 128], [60, 40, 222], [128, 128, 0],
                    [192, 128, 128], [64, 64, 128], [64, 0, 128],
                    [64, 64, 0], [0, 128, 192]], dtype=np.uint8)


def colour(labels: np.ndarray) -> np.ndarray:
    """(H, W) class map (IGNORE: void) -> (H, W, 3) RGB."""
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    known = labels != IGNORE
    out[known] = PALETTE[labels[known]]
    return out


def pca_rgb(tokens: torch.Tensor) -> np.ndarray:
    """(N, h, w, C) tokens -> (N, h, w, 3) uint8: their first three
    principal components, each scaled to 0-255 over all N images."""
    flat = tokens.flatten(0, 2).double()
    flat = flat - flat.mean(0)
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    comps = flat @ v[:3].T
    low, high = comps.min(0).values, comps.max(0).values
    rgb = (comps - low) / (high - low).clamp(min=1e-9) * 255
    return rgb.view(*tokens.shape[:3], 3).byte().numpy()


def upernet_predictions(run_dir: str, paths: List[str], size: int,
                        classes: int) -> Optional[List[np.ndarray]]:
    """The arm's fine-tuned UperNet on the images, at full resolution, then
    cut as the dense evaluation cuts (centre square at ``size``); None
    where finetune.py has not run for the arm."""
    from mmseg.apis import inference_model, init_model
    from mrcl_plugin.evaluation.seg_data import _square
    best = sorted(glob.glob(osp.join(run_dir, 'upernet', 'best_*.pth')))
    configs = glob.glob(osp.join(run_dir, 'upernet', '*.py'))
    if not best or not configs:
        return None
    model = init_model(configs[0], best[-1], device='cpu')
    out = []
    for path in paths:
        pred = inference_model(model, path).pred_sem_seg.data[0].numpy()
        out.append(_square(pred.astype(np.uint8), size, 'nearest'))
    return out


def retrieval_design(preset, layers: int) -> Tuple[int, float]:
    """(block, temperature) of the pictures' retrieval: the preset's
    chosen figure (``dense_headline``, e.g. 'knn_b5_t0.02'), else its last
    block at its last temperature."""
    if preset.dense_headline:
        found = re.fullmatch(r'knn_b(\d+)_t([\d.]+)', preset.dense_headline)
        return int(found[1]), float(found[2])
    return ((preset.dense_blocks or default_blocks(layers))[-1],
            preset.dense_temperatures[-1])


@torch.no_grad()
def arm_picture(run: Run, preset, rows_data, test, test_paths: List[str],
                work_root: str) -> np.ndarray:
    """The arm's grid: a row per test image."""
    run_dir = osp.join(work_root, run.name)
    cfg = run_config(run, preset, run_dir)
    model = build_model(cfg, weights(run, run_dir))
    block, temperature = retrieval_design(preset, len(model.backbone.layers))
    patch = model.backbone.patch_embed.projection.stride[0]
    bank = patch_features(model, rows_data.images, [block])[block]
    labels = patch_labels(rows_data.masks, patch, rows_data.num_classes)
    queries = patch_features(model, test.images, [block])[block]
    keep = labels.flatten(0, 2).sum(1) > 0
    pred = knn_patch_labels(bank.flatten(0, 2)[keep],
                            labels.flatten(0, 2)[keep],
                            queries.flatten(0, 2), 30, [temperature])
    size = test.images.shape[-1]
    retrieval = upsampled_argmax(
        pred[temperature].view(*queries.shape[:3], -1), size).numpy()
    upernet = upernet_predictions(run_dir, test_paths, size,
                                  test.num_classes)
    pca = pca_rgb(queries)
    rows = []
    for i in range(len(test.images)):
        image = test.images[i].permute(1, 2, 0).numpy()[..., ::-1]  # RGB
        tiles = [image, colour(test.masks[i].numpy()), colour(retrieval[i]),
                 *([colour(upernet[i])] if upernet else []),
                 mmcv.imresize(pca[i], (size, size), interpolation='nearest')]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('csv', help="the dense study's CSV (run.py's)")
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--out', required=True, help='a folder for the PNGs')
    parser.add_argument('--images', type=int, default=6)
    parser.add_argument('--every', type=int, default=40,
                        help='every n-th test image, from the first')
    args = parser.parse_args()
    rows = read_rows(args.csv)
    preset = PRESETS[rows[0]['preset']]
    work_root = osp.join(args.work_dir, preset.name)
    runs = {r.name: r for r in planned_runs(preset, rows)}
    root = dense_root(run_config(runs[rows[0]['name']], preset, work_root),
                      preset)
    bank = load_seg_folder(root, preset.dense_size, preset.dense_splits)
    test = load_seg_folder(root, preset.dense_size, ('test', ))
    index = list(range(0, args.every * args.images, args.every))
    test = test.subset(index)
    test_paths = [osp.join(root, name) for name in test.names]
    os.makedirs(args.out, exist_ok=True)
    done: Set[str] = set()  # arms pictured (each by its seed-0 run)
    for row in rows:
        name = arm_name(row, preset)
        if int(row['seed']) != 0 or name in done:
            continue
        grid = arm_picture(runs[row['name']], preset, bank, test,
                           test_paths, work_root)
        path = osp.join(args.out, picture_file(name))
        mmcv.imwrite(grid[..., ::-1], path)
        done.add(name)
        print(f'[pictures] {name}: {path}', flush=True)


if __name__ == '__main__':
    main()
