"""MRCL pretraining checkpoint -> the encoder alone, for other code bases."""
from typing import Any, Dict

from .checkpoint import load_checkpoint_file, mrcl_backbone


def to_mmpretrain(path: str) -> Dict[str, Any]:
    """The encoder of the MRCL checkpoint at ``path`` as an mmpretrain
    ``VisionTransformer`` checkpoint: ``state_dict`` with its keys (no
    ``backbone.`` prefix) and ``meta`` (arch, patch and image size, variant,
    mask ratio, iteration). mmseg/mmdet load it through mmpretrain's
    ``VisionTransformer`` with ``init_cfg=dict(type='Pretrained', ...)``."""
    backbone, meta = mrcl_backbone(load_checkpoint_file(path), path)
    return dict(state_dict=backbone, meta=dict(meta, source=str(path)))
