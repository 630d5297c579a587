"""MRCL or MAE (mmpretrain's, or the official release) pretraining
checkpoint -> its encoder with timm's VisionTransformer keys and a meta
telling how to build the model (docs/converters.md).

    python tools/model_converters/mrcl2timm.py SRC DST [--no-strict]
"""
import sys

from mrcl_plugin.checkpoints.converters import main

if __name__ == '__main__':
    sys.exit(main('timm'))
