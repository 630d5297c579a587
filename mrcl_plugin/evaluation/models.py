"""An evaluation tool's model: a config's model with its preprocessor, at
random init or with a checkpoint's weights, for the kNN, dense and
reconstruction tools and the study."""
import logging
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from ..checkpoints import (BACKBONE_PREFIX, VIT_KEYS, CheckpointError,
                           key_mismatches, load_checkpoint, state_dict_of)


def build_model(cfg: Config, checkpoint: Optional[str] = None):
    """The config's model with the config's data preprocessor (as the
    Runner builds it), in eval mode: random init, or the weights of
    ``checkpoint`` (read weights-only; an MRCL checkpoint of this config, or
    an encoder-only one with ``VisionTransformer`` keys)."""
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    # mmpretrain's registry, whatever scope the caller runs in
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)
    if checkpoint:
        load_weights(model, checkpoint)
    else:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every tensor
        model.init_weights()
        logger.setLevel(level)
    return model.eval()


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Load the checkpoint at ``path`` into ``model`` strictly: the whole
    model from a checkpoint of it, or its backbone from an encoder-only one.

    Raises:
        CheckpointError: unreadable, or its tensors do not fit the model.
    """
    state = state_dict_of(load_checkpoint(path), path)
    target = model
    if not any(k.startswith(BACKBONE_PREFIX) for k in state):
        if not all(k in state for k in VIT_KEYS):
            raise CheckpointError(
                path, 'neither a model checkpoint (no backbone.* keys) nor '
                f'an encoder-only one (no {VIT_KEYS[0]})')
        target = model.backbone
    problems = key_mismatches(target.state_dict(), state)
    if problems:
        raise CheckpointError(
            path, f"does not fit the config's model: {'; '.join(problems)}")
    target.load_state_dict(state, strict=True)
