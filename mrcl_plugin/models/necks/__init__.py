from .checkpointed_mae_decoder import CheckpointedMAEDecoder
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['CheckpointedMAEDecoder', 'SimpleFeaturePyramid']
