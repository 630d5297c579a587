"""Dense evaluation of an encoder's frozen patch features.

Does an encoder keep what dense tasks need? Two views, on a segmentation
folder in mmseg's ADE20K layout (``images/<split>/*.jpg`` beside
``annotations/<split>/*.png``, 0 = unlabelled, k = class k - 1):

- in-context retrieval, the "Hummingbird" protocol (Balazevic et al.,
  "Towards In-context Scene Understanding", NeurIPS 2023): the
  L2-normalised patch tokens of labelled images are a memory bank, each
  patch labelled softly by the fraction of its labelled pixels of each
  class; each query patch averages the labels of its ``k`` most
  cosine-similar bank patches, weighted by softmax(similarity / T). No
  Hungarian matching (the open re-implementation adds one for unsupervised
  clustering; here the classes are known);
- a linear patch probe (Leopart's / DINOv2's linear protocol): one linear
  layer on the same frozen tokens, trained with cross-entropy against the
  patches' soft labels.

Both predict per patch; the (N, h, w, K) predictions are upsampled
bilinearly to the image, the argmax is compared with the mask in a
confusion matrix, and mIoU is mmseg's: IoU over the classes that are in
the masks or the predictions. With a few hundred images the images are
split into folds, each fold the queries of a bank made of the others, and
the mean over folds is reported with a bootstrap interval over query
images. :class:`~mrcl_plugin.engine.hooks.DenseKNNHook` and
``tools/analysis_tools/dense_eval.py`` are built on these functions.
"""
import math
import os
import os.path as osp
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
import torch.nn.functional as F

IGNORE = 255  # the unlabelled pixels of a mask, after reducing label 0
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


class SegFolderError(ValueError):
    """A segmentation folder that cannot be evaluated; one line that names
    the file or folder."""


@dataclass(frozen=True)
class SegData:
    """Images and masks of a segmentation folder at one square size.

    Attributes:
        images: (N, 3, S, S) uint8, BGR as mmcv loads them.
        masks: (N, S, S) int64, the class index or :data:`IGNORE`.
        names: (N, ) the images' paths relative to the folder; the folds
            are drawn from them, so the order of the images does not matter.
        classes: (K, ) class names.
    """
    images: torch.Tensor
    masks: torch.Tensor
    names: Tuple[str, ...]
    classes: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int]) -> 'SegData':
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return replace(self, images=self.images[idx], masks=self.masks[idx],
                       names=tuple(self.names[i] for i in idx.tolist()))


# -- the data -----------------------------------------------------------------


def seg_pairs(data_root: str,
              splits: Sequence[str] = ('training', 'validation')
              ) -> List[Tuple[str, str]]:
    """(image, mask) paths of the ``splits`` of an ADE-layout folder.

    Raises:
        SegFolderError: a split without ``images/<split>`` or
            ``annotations/<split>``, an image without its mask, no image.
    """
    pairs = []
    for split in splits:
        img_dir = osp.join(data_root, 'images', split)
        ann_dir = osp.join(data_root, 'annotations', split)
        for folder, what in ((img_dir, 'images'), (ann_dir, 'masks')):
            if not osp.isdir(folder):
                raise SegFolderError(
                    f'no {what}: {folder} does not exist (a segmentation '
                    'folder in mmseg\'s ADE20K layout has images/<split>/'
                    '*.jpg and annotations/<split>/*.png)')
        for name in sorted(os.listdir(img_dir)):
            stem, ext = osp.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            mask = osp.join(ann_dir, stem + '.png')
            if not osp.isfile(mask):
                raise SegFolderError(
                    f'no mask for {osp.join(img_dir, name)}: {mask} does not '
                    'exist')
            pairs.append((osp.join(img_dir, name), mask))
    if not pairs:
        raise SegFolderError(f'no images in {data_root}/images/'
                             f'{{{",".join(splits)}}}')
    return pairs


def read_classes(data_root: str, masks: List[np.ndarray]) -> Tuple[str, ...]:
    """``classes.txt`` of the folder (line k: the class of mask value k + 1),
    or ``class<i>`` names up to the largest value in the masks."""
    path = osp.join(data_root, 'classes.txt')
    if osp.isfile(path):
        with open(path) as f:
            return tuple(line.strip() for line in f if line.strip())
    top = max(int(m.max()) for m in masks)
    return tuple(f'class{i}' for i in range(top))


def _square(img: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """Scale the short edge to ``size`` and crop the centre square."""
    h, w = img.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = mmcv.imresize(img, (nw, nh), interpolation=interpolation,
                        backend='pillow' if interpolation == 'bilinear'
                        else 'cv2')
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[top:top + size, left:left + size]


def load_seg_folder(data_root: str,
                    size: int,
                    splits: Sequence[str] = ('training', 'validation')
                    ) -> SegData:
    """The images and masks of ``splits`` at ``size`` x ``size``: the short
    edge scaled to ``size`` (images bilinear, masks nearest) and the centre
    cropped. Mask value 0 becomes :data:`IGNORE`, value v class v - 1
    (mmseg's ``reduce_zero_label``).

    Raises:
        SegFolderError: see :func:`seg_pairs`; a mask whose size differs
            from its image's, or with values beyond the classes.
    """
    images, masks, names = [], [], []
    for img_path, mask_path in seg_pairs(data_root, splits):
        img = mmcv.imread(img_path, flag='color')
        mask = mmcv.imread(mask_path, flag='unchanged', backend='pillow')
        if mask.ndim != 2:
            raise SegFolderError(f'{mask_path}: a mask must have one channel '
                                 f'of class values, it has shape {mask.shape}')
        if mask.shape != img.shape[:2]:
            raise SegFolderError(
                f'{mask_path} is {mask.shape[0]}x{mask.shape[1]}, its image '
                f'{img_path} {img.shape[0]}x{img.shape[1]}: a mask must have '
                'its image\'s size')
        images.append(_square(img, size, 'bilinear'))
        masks.append(_square(mask, size, 'nearest'))
        names.append(osp.relpath(img_path, data_root))
    classes = read_classes(data_root, masks)
    mask = torch.from_numpy(np.stack(masks)).long()
    if int(mask.max()) > len(classes):
        bad = names[int((mask.flatten(1).max(1).values > len(classes))
                        .nonzero()[0])]
        raise SegFolderError(
            f'the mask of {bad} has value {int(mask.max())}, beyond the '
            f'{len(classes)} classes of {data_root}')
    return SegData(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2),
        masks=torch.where(mask == 0, IGNORE, mask - 1), names=tuple(names), classes=tuple(classes))


def augment_bank(data: SegData, copies: int, scale=(0.25, 1.),
                 seed: int = 0) -> SegData:
    """``copies`` random resized crops of each image and its mask (the
    area fraction in ``scale``, aspect 3/4 to 4/3, image bilinear and mask
    nearest back to the size), for a larger memory bank. Each copy's name
    is its image's, so it stays in its image's fold."""
    g = torch.Generator().manual_seed(seed)
    size = data.images.shape[-1]
    images, masks, names = [], [], []
    for i in range(len(data.names)):
        for _ in range(copies):
            area = size * size * float(torch.empty(1).uniform_(*scale,
                                                               generator=g))
            ratio = math.exp(float(torch.empty(1).uniform_(
                math.log(3 / 4), math.log(4 / 3), generator=g)))
            w = min(size, max(1, round(math.sqrt(area * ratio))))
            h = min(size, max(1, round(math.sqrt(area / ratio))))
            top = int(torch.randint(size - h + 1, (1, ), generator=g))
            left = int(torch.randint(size - w + 1, (1, ), generator=g))
            crop = data.images[i:i + 1, :, top:top + h, left:left + w]
            images.append(F.interpolate(
                crop.float(), size=(size, size), mode='bilinear',
                align_corners=False).round().clamp(0, 255).byte())
            crop = data.masks[i:i + 1, None, top:top + h, left:left + w]
            masks.append(F.interpolate(crop.float(), size=(size, size),
                                       mode='nearest').long()[:, 0])
            names.append(data.names[i])
    return replace(data, images=torch.cat(images), masks=torch.cat(masks),
                   names=tuple(names))


def patch_labels(masks: torch.Tensor, patch_size: int,
                 num_classes: int) -> torch.Tensor:
    """(N, h, w, K): the fraction of each patch's labelled pixels in each
    class; all zero for a patch without a labelled pixel."""
    n, s, _ = masks.shape
    grid = s // patch_size
    rows = torch.arange(s) // patch_size
    patch = (rows[:, None] * grid + rows[None, :]).expand(n, s, s)
    image = torch.arange(n)[:, None, None].expand(n, s, s)
    keep = masks != IGNORE
    index = ((image * grid * grid + patch) * num_classes + masks)[keep]
    counts = torch.bincount(index, minlength=n * grid * grid * num_classes)
    counts = counts.view(n, grid, grid, num_classes).float()
    return counts / counts.sum(-1, keepdim=True).clamp(min=1)


# -- the features -------------------------------------------------------------


def default_blocks(num_layers: int) -> Tuple[int, int]:
    """The block in the middle and the last (0-based, as ``out_indices``):
    3 and 5 of 6, 5 and 11 of 12."""
    return (num_layers // 2 - 1, num_layers - 1)


def check_geometry(backbone, size: int, blocks: Sequence[int]) -> None:
    """The evaluation size must be a whole number of patches and the blocks
    the backbone's.

    Raises:
        ValueError: naming the size or block.
    """
    patch = backbone.patch_embed.projection.stride[0]
    if size % patch:
        raise ValueError(f'the evaluation size {size} is not a multiple of '
                         f'the patch size {patch}')
    depth = len(backbone.layers)
    wrong = [b for b in blocks if not 0 <= b < depth]
    if wrong:
        raise ValueError(f'blocks {wrong}: the backbone has blocks 0 to '
                         f'{depth - 1}')


@contextmanager
def _patch_token_outputs(backbone, blocks: Sequence[int]) -> Iterator:
    """The backbone's forward returns the patch tokens of ``blocks`` as
    (B, C, h, w) maps (mmpretrain ``VisionTransformer``'s own
    ``out_indices`` and ``out_type='featmap'``: the class token dropped,
    the final norm after the last block, the position embedding resized to
    the input's grid), restored after."""
    old = backbone.out_indices, backbone.out_type
    backbone.out_indices, backbone.out_type = list(blocks), 'featmap'
    try:
        yield
    finally:
        backbone.out_indices, backbone.out_type = old


@torch.no_grad()
def patch_features(model, images: torch.Tensor, blocks: Sequence[int],
                   batch_size: int = 64) -> Dict[int, torch.Tensor]:
    """L2-normalised patch tokens of the full (unmasked) images.

    Args:
        model: an mmpretrain model with ``data_preprocessor`` and a
            ``VisionTransformer`` (or subclass: ``MAEViT``, ``MRCLViT``)
            ``backbone``, in eval mode.
        images: (N, 3, S, S) uint8 BGR; S need not be the backbone's
            ``img_size`` (its position embedding is interpolated).
        blocks: 0-based block indices.

    Returns:
        dict: {block: (N, h, w, C) float32}.
    """
    backbone = model.backbone
    check_geometry(backbone, images.shape[-1], blocks)
    device = next(model.parameters()).device
    out = {b: [] for b in blocks}
    with _patch_token_outputs(backbone, blocks):
        for start in range(0, len(images), batch_size):
            inputs = model.data_preprocessor(dict(
                inputs=images[start:start + batch_size],
                data_samples=None))['inputs']
            maps = backbone(inputs.to(device), None) if _maskable(
                backbone) else backbone(inputs.to(device))
            for b, fmap in zip(sorted(blocks), maps):
                out[b].append(F.normalize(
                    fmap.float().permute(0, 2, 3, 1), dim=-1).cpu())
    return {b: torch.cat(v) for b, v in out.items()}


def _maskable(backbone) -> bool:
    """MAEViT's forward masks unless told not to (``mask=None``)."""
    from mmpretrain.models import MAEViT
    return isinstance(backbone, MAEViT)


# -- in-context retrieval -----------------------------------------------------


def knn_patch_labels(bank_feats: torch.Tensor,
                     bank_labels: torch.Tensor,
                     query_feats: torch.Tensor,
                     k: int = 30,
                     temperatures: Sequence[float] = (0.02, ),
                     query_chunk: int = 1024,
                     bank_chunk: int = 32768) -> Dict[float, torch.Tensor]:
    """Each query's label distribution: the labels of its ``k`` most
    similar bank rows, weighted by softmax(similarity / T).

    The search is chunked (at most ``query_chunk`` x ``bank_chunk``
    similarities at once, a running top-k across bank chunks), so memory
    stays bounded however large the bank.

    Args:
        bank_feats (Tensor): (M, C) unit rows.
        bank_labels (Tensor): (M, K) label distributions.
        query_feats (Tensor): (Q, C) unit rows.

    Returns:
        dict: {T: (Q, K)}.
    """
    if k > len(bank_feats):
        raise ValueError(f'k={k} is more than the {len(bank_feats)} bank '
                         'patches')
    preds = {t: [] for t in temperatures}
    for q0 in range(0, len(query_feats), query_chunk):
        query = query_feats[q0:q0 + query_chunk]
        best_sim = query.new_empty(len(query), 0)
        best_idx = torch.empty(len(query), 0, dtype=torch.long,
                               device=query.device)
        for b0 in range(0, len(bank_feats), bank_chunk):
            sim = query @ bank_feats[b0:b0 + bank_chunk].T
            sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)
            best_sim, order = torch.cat([best_sim, sim], 1).topk(
                min(k, best_sim.shape[1] + sim.shape[1]), dim=1)
            best_idx = torch.cat([best_idx, idx + b0], 1).gather(1, order)
        labels = bank_labels[best_idx]  # (q, k, K)
        for t in temperatures:
            weights = (best_sim / t).softmax(1)
            preds[t].append(torch.einsum('qk,qkc->qc', weights, labels))
    return {t: torch.cat(p) for t, p in preds.items()}


# -- scoring ------------------------------------------------------------------


def upsampled_argmax(patch_scores: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w, K) patch scores -> (N, size, size) class map: bilinear
    upsampling of the scores, then argmax."""
    scores = F.interpolate(patch_scores.permute(0, 3, 1, 2).float(),
                           size=(size, size), mode='bilinear',
                           align_corners=False)
    return scores.argmax(1)


def image_areas(pred: torch.Tensor, masks: torch.Tensor,
                num_classes: int) -> torch.Tensor:
    """(N, 3, K) per image and class: the areas of intersection, of the
    prediction and of the label, from each image's confusion matrix
    (unlabelled pixels left out). mIoU over any set of images is a
    function of their sum (:func:`miou`)."""
    areas = []
    for p, m in zip(pred, masks):
        keep = m != IGNORE
        confusion = torch.bincount(
            m[keep] * num_classes + p[keep],
            minlength=num_classes * num_classes).view(num_classes,
                                                      num_classes)
        areas.append(torch.stack([confusion.diag(), confusion.sum(0),
                                  confusion.sum(1)]))
    return torch.stack(areas).double()


def miou(areas: torch.Tensor) -> float:
    """mIoU (%) of summed (3, K) areas, mmseg's: the mean IoU of the classes
    with a non-empty union (in the masks or in the predictions)."""
    inter, pred, label = areas
    union = pred + label - inter
    present = union > 0
    return float((inter[present] / union[present]).mean() * 100)


def folds_of(names: Sequence[str], folds: int) -> torch.Tensor:
    """(N, ) the fold of each image: round robin over the sorted distinct
    names (augmented copies share their image's), so the folds do not
    depend on the order of the images."""
    order = {n: i % folds for i, n in enumerate(sorted(set(names)))}
    return torch.tensor([order[n] for n in names])


def summarise(fold_areas: List[torch.Tensor], bootstrap: int = 1000,
              seed: int = 0) -> Dict[str, float]:
    """The mean mIoU over folds, and its 95% percentile bootstrap interval
    (query images resampled with replacement within each fold).

    Args:
        fold_areas: per fold, (n_f, 3, K) :func:`image_areas` of its
            queries.
    """
    result = dict(miou=float(np.mean([miou(a.sum(0)) for a in fold_areas])))
    if bootstrap:
        g = torch.Generator().manual_seed(seed)
        samples = []
        for _ in range(bootstrap):
            samples.append(np.mean([
                miou(a[torch.randint(len(a), (len(a), ), generator=g)].sum(0))
                for a in fold_areas]))
        result['low'], result['high'] = (float(x) for x in np.percentile(
            samples, [2.5, 97.5]))
    return result


# -- the two protocols --------------------------------------------------------


def dense_knn(feats: torch.Tensor,
              data: SegData,
              patch_size: int,
              folds: int = 5,
              k: int = 30,
              temperatures: Sequence[float] = (0.02, 0.07),
              bank: Optional[Tuple[torch.Tensor, SegData]] = None,
              **chunks) -> Dict[float, List[torch.Tensor]]:
    """In-context retrieval with ``folds``-fold cross-validation: the images
    of each fold are the queries of a bank of the patches of the others.

    Args:
        feats: (N, h, w, C) :func:`patch_features` of ``data``'s images.
        bank: (features, data) of the bank images when they are not
            ``feats`` and ``data`` (memory-bank augmentation); a bank image
            is used in the folds its name is not in.

    Returns:
        dict: {T: per fold, its queries' (n_f, 3, K) :func:`image_areas`}.
    """
    bank_feats, bank_data = bank or (feats, data)
    labels = patch_labels(bank_data.masks, patch_size, data.num_classes)
    bank_fold = folds_of(bank_data.names, folds)
    query_fold = folds_of(data.names, folds)
    if set(bank_data.names) != set(data.names):
        raise ValueError('the bank must be made of the query images')
    out = {t: [] for t in temperatures}
    size = data.masks.shape[-1]
    for f in range(folds):
        queries = (query_fold == f).nonzero()[:, 0]
        if not len(queries):
            continue
        b_feats = bank_feats[bank_fold != f].flatten(0, 2)
        b_labels = labels[bank_fold != f].flatten(0, 2)
        labelled = b_labels.sum(1) > 0  # unlabelled patches: out
        q = feats[queries]
        preds = knn_patch_labels(b_feats[labelled], b_labels[labelled],
                                 q.flatten(0, 2), k, temperatures, **chunks)
        for t, p in preds.items():
            pred = upsampled_argmax(p.view(*q.shape[:3], -1), size)
            out[t].append(image_areas(pred, data.masks[queries],
                                      data.num_classes))
    return out


def train_linear_probe(feats: torch.Tensor, labels: torch.Tensor,
                       epochs: int = 100, lr: float = 0.01,
                       seed: int = 0) -> torch.nn.Linear:
    """One linear layer trained on frozen patch features against their soft
    labels: cross-entropy at patch resolution (patches without a labelled
    pixel left out), full-batch Adam from a seeded init (deterministic).
    The features are standardised with the training statistics, folded
    into the returned layer.

    Args:
        feats: (M, C); labels: (M, K) distributions.
    """
    keep = labels.sum(1) > 0
    x, y = feats[keep], labels[keep]
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    g = torch.Generator().manual_seed(seed)
    fc = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 0.01)
        fc.bias.zero_()
    optim = torch.optim.Adam(fc.parameters(), lr=lr)
    for _ in range(epochs):
        optim.zero_grad()
        loss = -(y * fc(x).log_softmax(1)).sum(1).mean()
        loss.backward()
        optim.step()
    with torch.no_grad():  # fc((x - mean) / std) as one layer
        folded = torch.nn.Linear(x.shape[1], y.shape[1])
        folded.weight.copy_(fc.weight / std)
        folded.bias.copy_(fc.bias - (fc.weight / std) @ mean)
    return folded.requires_grad_(False)


def dense_linear(feats: torch.Tensor,
                 data: SegData,
                 patch_size: int,
                 folds: int = 5,
                 epochs: int = 100,
                 lr: float = 0.01) -> List[torch.Tensor]:
    """The linear patch probe with the folds of :func:`dense_knn`: trained
    on the patches of the other folds, its logits upsampled to the image.

    Returns:
        list: per fold, its queries' (n_f, 3, K) :func:`image_areas`.
    """
    labels = patch_labels(data.masks, patch_size, data.num_classes)
    fold = folds_of(data.names, folds)
    size, out = data.masks.shape[-1], []
    for f in range(folds):
        queries = (fold == f).nonzero()[:, 0]
        if not len(queries):
            continue
        probe = train_linear_probe(feats[fold != f].flatten(0, 2),
                                   labels[fold != f].flatten(0, 2), epochs,
                                   lr)
        with torch.no_grad():
            pred = upsampled_argmax(probe(feats[queries]), size)
        out.append(image_areas(pred, data.masks[queries], data.num_classes))
    return out


def dense_eval(model,
               data: SegData,
               blocks: Optional[Sequence[int]] = None,
               folds: int = 5,
               k: int = 30,
               temperatures: Sequence[float] = (0.02, 0.07),
               bank_copies: int = 0,
               linear: bool = True,
               linear_epochs: int = 100,
               bootstrap: int = 1000,
               batch_size: int = 64) -> Dict[str, Dict[str, float]]:
    """Dense k-NN retrieval and (with ``linear``) the linear patch probe of
    ``model``'s frozen patch tokens on ``data``, ``folds``-fold.

    Args:
        model: see :func:`patch_features`; used as it is (eval mode).
        blocks: 0-based; defaults to :func:`default_blocks`.
        bank_copies (int): memory-bank augmentation: this many random
            resized crops of each image join the bank (:func:`augment_bank`).

    Returns:
        dict: ``knn_b{block}_t{T}`` and ``linear_b{block}``, each with
        ``miou`` (%), the mean over folds, and its bootstrap interval
        ``low``, ``high``.
    """
    backbone = model.backbone
    blocks = tuple(blocks or default_blocks(len(backbone.layers)))
    patch = backbone.patch_embed.projection.stride[0]
    feats = patch_features(model, data.images, blocks, batch_size)
    bank = None
    if bank_copies:
        bank_data = augment_bank(data, bank_copies)
        bank_feats = patch_features(model, bank_data.images, blocks,
                                    batch_size)
    results = {}
    for b in blocks:
        if bank_copies:
            bank = (torch.cat([feats[b], bank_feats[b]]),
                    replace(bank_data,
                            masks=torch.cat([data.masks, bank_data.masks]),
                            names=data.names + bank_data.names))
        for t, areas in dense_knn(feats[b], data, patch, folds, k,
                                  temperatures, bank).items():
            results[f'knn_b{b}_t{t:g}'] = summarise(areas, bootstrap)
        if linear:
            results[f'linear_b{b}'] = summarise(
                dense_linear(feats[b], data, patch, folds, linear_epochs),
                bootstrap)
    return results
