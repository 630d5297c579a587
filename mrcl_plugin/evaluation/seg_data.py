"""Segmentation folders for the dense evaluation: images and masks in
mmseg's ADE20K layout, at one square size, and the patches' soft labels.

A folder has ``images/<split>/*.jpg`` beside ``annotations/<split>/*.png``
(mask value 0 unlabelled, value v class v - 1, as mmseg's
``reduce_zero_label``) and a ``classes.txt``: the COCO sample
``coco_semseg_ade_layout`` and CamVid (``camvid``) in ../shared/data.
"""
import math
import os
import os.path as osp
from dataclasses import dataclass, replace
from typing import List, Sequence, Tuple

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
