"""Everything that reads or writes a checkpoint, one module per concern.

Checkpoints are data: nothing in a file runs, and every way a file or URL
comes in ends in one reader (docs/reliability.md has the table of doors).

- :mod:`.reader`: the weights-only reader, its allow-list and its one-line
  :class:`CheckpointError`;
- :mod:`.schemes`: mmengine's checkpoint schemes (local, http(s),
  open-mmlab, mmcls, torchvision, s3/petrel, pavi), each ending in the
  reader;
- :mod:`.zero`: DeepSpeed ZeRO folders, read as data;
- :mod:`.atomic`: whole-or-nothing writes and the checkpoint to resume;
- :mod:`.meta`: ``meta['mrcl']``, what an MRCL checkpoint says it is;
- :mod:`.config_text`: a saved config's text read as data;
- :mod:`.converters`: the encoder for mmpretrain, mmseg, mmdet and timm.
"""
from .atomic import AtomicLocalBackend, atomic_path, latest_checkpoint
from .config_text import config_data, config_part
from .meta import (BACKBONE_PREFIX, VIT_KEYS, key_list, key_mismatches,
                   mrcl_backbone, saved_model_type, state_dict_of)
from .reader import CheckpointError, load_checkpoint_file, read_checkpoint
from .schemes import load_checkpoint, register_schemes
from .zero import (check_zero_folder, is_zero_checkpoint,
                   load_zero_checkpoint)

__all__ = [
    'AtomicLocalBackend', 'BACKBONE_PREFIX', 'CheckpointError', 'VIT_KEYS',
    'atomic_path', 'check_zero_folder', 'config_data', 'config_part',
    'is_zero_checkpoint', 'key_list', 'key_mismatches', 'latest_checkpoint',
    'load_checkpoint', 'load_checkpoint_file', 'load_zero_checkpoint',
    'mrcl_backbone', 'read_checkpoint', 'register_schemes',
    'saved_model_type', 'state_dict_of'
]
