"""Necks: MAE's decoder with activation checkpointing, for MRCL's
reconstruction (arXiv 2211.09013), and ViTDet's simple feature pyramid for
detection transfer."""
from .checkpointed_mae_decoder import CheckpointedMAEDecoder
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['CheckpointedMAEDecoder', 'SimpleFeaturePyramid']
