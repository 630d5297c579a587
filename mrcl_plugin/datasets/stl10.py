import os.path as osp
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
SPLITS = {
    'train': ['train'],
    'test': ['test'],
    'unlabeled': ['unlabeled'],
    'train+unlabeled': ['train', 'unlabeled'],
}


class STL10FileError(ValueError):
    """A missing or malformed STL-10 file; the message is one line."""


@DATASETS.register_module()
class STL10(BaseDataset):
    """STL-10 (Coates et al., 2011) read from its official binary release,
    the folder ``stl10_binary/`` of ``stl10_binary.tar.gz``: no export step.

    ``<split>_X.bin`` holds uint8 images of 3 x 96 x 96, each channel stored
    column-major (the release's MATLAB order); ``<split>_y.bin`` one uint8
    label in 1..10 per image. Images are read from the file one at a time
    (the 100,000 unlabeled ones are 2.8 GB) and given to the pipeline as
    ``img``, (96, 96, 3) in BGR order, as ``LoadImageFromFile`` gives an
    image, so the configs' data preprocessor (``to_rgb=True``) applies
    unchanged; the pipeline starts after image loading.

    Args:
        data_root (str): The folder that holds ``stl10_binary/``.
        split (str): ``'train'`` (5,000 labelled), ``'test'`` (8,000),
            ``'unlabeled'`` (100,000, label -1) or ``'train+unlabeled'``
            (the paper's pretraining set, Sec. 4.3).
        **kwargs: Other arguments of mmpretrain's ``BaseDataset``
            (``pipeline``, ``indices``, ``lazy_init`` ...).
    """
    METAINFO = {
        'classes': ('airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse',
                    'monkey', 'ship', 'truck')
    }

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 metainfo: Optional[dict] = None,
                 **kwargs):
        if split not in SPLITS:
            raise STL10FileError(f'STL10 split {split!r}: must be one of '
                                 f'{", ".join(SPLITS)}')
        self.split = split
        self.folder = osp.join(data_root, 'stl10_binary')
        # Checked at construction, lazy or not: the pre-flight of
        # tools/train.py builds the dataset lazily to name a bad file
        # before anything is written.
        self.counts = {part: self._count(part) for part in SPLITS[split]}
        super().__init__(
            ann_file='', metainfo=metainfo, data_root=data_root, **kwargs)

    def _path(self, name: str) -> str:
        return osp.join(self.folder, name)

    def _count(self, part: str) -> int:
        """The number of images of ``part``; raises for a missing file, a
        size that is not whole images, or a label file of another length."""
        images = self._path(f'{part}_X.bin')
        if not osp.isfile(images):
            raise STL10FileError(f'STL-10 file {images} does not exist')
        size = osp.getsize(images)
        if size == 0 or size % IMAGE_BYTES:
            raise STL10FileError(
                f'STL-10 file {images}: {size} bytes is not a whole number '
                f'of 96x96x3 images ({IMAGE_BYTES} bytes each); truncated?')
        count = size // IMAGE_BYTES
        if part != 'unlabeled':
            labels = self._path(f'{part}_y.bin')
            if not osp.isfile(labels):
                raise STL10FileError(f'STL-10 file {labels} does not exist')
            if osp.getsize(labels) != count:
                raise STL10FileError(
                    f'STL-10 file {labels}: {osp.getsize(labels)} labels '
                    f'for the {count} images of {images}')
        return count

    def load_data_list(self) -> List[dict]:
        data_list = []
        for part, count in self.counts.items():
            if part == 'unlabeled':
                labels = np.full(count, -1)
            else:
                labels = np.fromfile(self._path(f'{part}_y.bin'),
                                     np.uint8).astype(int) - 1
            data_list += [
                dict(part=part, index=i, gt_label=int(label))
                for i, label in enumerate(labels)
            ]
        return data_list

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        with open(self._path(f'{info["part"]}_X.bin'), 'rb') as f:
            f.seek(info['index'] * IMAGE_BYTES)
            chw = np.frombuffer(f.read(IMAGE_BYTES), np.uint8)
        # (C, W, H) in C order is the release's column-major (H, W, C)
        rgb = chw.reshape(3, SIDE, SIDE).transpose(2, 1, 0)
        img = np.ascontiguousarray(rgb[..., ::-1])
        info.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return info

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Root: \t{self.data_root}']
