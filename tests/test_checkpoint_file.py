"""Checkpoints are read weights-only: mmengine's own load, anything else is
refused with one line naming the file and the problem."""
import os
import pickle
import random
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmpretrain.models import VisionTransformer

from mrcl_plugin.checkpoints import (CheckpointError, config_data,
                                    load_checkpoint_file, mrcl_backbone)


class _RunsCode:

    def __reduce__(self):
        return (os.system, ('touch PWNED_BY_CHECKPOINT',))


def test_mmengine_checkpoint_loads_weights_only(mrcl_checkpoint):
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    assert {'meta', 'state_dict', 'optimizer', 'message_hub'} <= set(ckpt)
    # the classes mmengine pickles came back as themselves
    from mmengine.logging import HistoryBuffer
    scalars = ckpt['message_hub']['log_scalars']
    assert all(isinstance(v, HistoryBuffer) for v in scalars.values())
    assert ckpt['meta']['iter'] == 4


def test_loads_in_a_fresh_process(mrcl_checkpoint):
    """No HistoryBuffer exists yet in a new process (its statistics methods
    are registered by the first one made)."""
    code = ('from mrcl_plugin.checkpoints import load_checkpoint_file; '
            f'print(load_checkpoint_file({str(mrcl_checkpoint)!r})'
            "['meta']['iter'])")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '4'


def test_mrcl_backbone_loads_strictly_into_vision_transformer(
        mrcl_checkpoint):
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    backbone, meta = mrcl_backbone(ckpt, str(mrcl_checkpoint))
    assert meta == dict(embed_dims=192, num_layers=6, num_heads=3,
                        feedforward_channels=768, patch_size=4, img_size=32,
                        learner='barlowtwins', mask_ratio=0.2, iter=4,
                        rec_weights=dict(alpha=10.0, lambd=10.0),
                        mean=[125.307, 122.961, 113.8575],
                        std=[51.5865, 50.847, 51.255], max_iters=4)
    assert ckpt['meta']['mrcl']['type'] == 'MRBarlowTwins'
    vit = VisionTransformer(
        arch={k: meta[k] for k in ('embed_dims', 'num_layers', 'num_heads',
                                   'feedforward_channels')},
        img_size=meta['img_size'], patch_size=meta['patch_size'])
    vit.load_state_dict(backbone, strict=True)
    assert torch.equal(vit.pos_embed, ckpt['state_dict']['backbone.pos_embed'])


@pytest.mark.parametrize('content, reason', [
    (random.Random(0).randbytes(4096), 'not a torch checkpoint'),
    (b'', 'truncated or corrupt'),
    (pickle.dumps(_RunsCode(), protocol=2),
     'refused: it pickles posix.system'),
    (pickle.dumps(_RunsCode(), protocol=4), 'not a torch checkpoint'),
], ids=['random_bytes', 'empty', 'pickle_protocol_2', 'pickle_protocol_4'])
def test_bad_files_are_refused_with_one_line(tmp_path, monkeypatch, content,
                                              reason):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'bad.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(path)
    message = str(error.value)
    assert message.startswith(f'{path}: ') and reason in message, message
    assert '\n' not in message
    assert not (tmp_path / 'PWNED_BY_CHECKPOINT').exists()


def test_a_torch_file_that_is_no_dict_is_refused(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError,
                       match='not a checkpoint: it holds a list'):
        load_checkpoint_file(path)


def test_truncated_checkpoint_is_refused(mrcl_checkpoint, tmp_path):
    data = mrcl_checkpoint.read_bytes()
    path = tmp_path / 'truncated.pth'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_checkpoint_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match='missing.pth: no such file'):
        load_checkpoint_file(tmp_path / 'missing.pth')


def test_classifier_checkpoint_is_not_mrcl(tmp_path):
    model = dict(type='ImageClassifier',
                 backbone=dict(type='VisionTransformer', arch='deit-tiny',
                               img_size=32, patch_size=4),
                 head=dict(type='VisionTransformerClsHead', num_classes=10,
                           in_channels=192))
    vit = VisionTransformer(arch='deit-tiny', img_size=32, patch_size=4)
    path = tmp_path / 'classifier.pth'
    torch.save({'meta': {'cfg': Config(dict(model=model)).pretty_text},
                'state_dict': {f'backbone.{k}': v
                               for k, v in vit.state_dict().items()}}, path)
    with pytest.raises(CheckpointError) as error:
        mrcl_backbone(load_checkpoint_file(path), str(path))
    assert str(error.value) == (
        f"{path}: not an MRCL checkpoint: no meta['mrcl'] (MRCLMetaHook "
        'writes it; this is a checkpoint of ImageClassifier)')


def test_checkpoint_whose_meta_is_not_its_encoder(mrcl_checkpoint,
                                                  tmp_path):
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    ckpt['meta']['mrcl']['encoder']['embed_dims'] = 384
    with pytest.raises(CheckpointError) as error:
        mrcl_backbone(ckpt, 'x.pth')
    assert str(error.value) == (
        "x.pth: its tensors are not the encoder its meta['mrcl'] "
        'describes: embed_dims 192 (meta: 384)')
    del ckpt['meta']['mrcl']
    with pytest.raises(CheckpointError, match=r"no meta\['mrcl'\] .* "
                       'this is a checkpoint of MRBarlowTwins'):
        mrcl_backbone(ckpt, 'x.pth')


def test_config_data_reads_a_dumped_config_without_running_it(tmp_path):
    marker = tmp_path / 'ran'
    text = Config(dict(model=dict(type='MRSimCLR', backbone=dict(
        arch=dict(embed_dims=64), mask_ratio=0.2), rec_head=None),
        train_cfg=dict(max_iters=4))).pretty_text
    text += f"\nran = open({str(marker)!r}, 'w')\n"
    assert config_data(text) == dict(
        model=dict(type='MRSimCLR', rec_head=None, backbone=dict(
            arch=dict(embed_dims=64), mask_ratio=0.2)),
        train_cfg=dict(max_iters=4))
    assert not marker.exists()
    assert config_data('model = dict(') == {}


def test_a_numpy2_checkpoint_loads():
    """tests/data/numpy2_checkpoint.pth was saved by torch.save under numpy
    2.2.6: its numpy arrays and scalars pickle as
    ``numpy._core.multiarray._reconstruct`` / ``.scalar`` (numpy 1:
    ``numpy.core``). Made with, numpy 2 on the path:
    torch.save({'meta': {'seed': np.int64(7), 'lr': np.float64(0.5)},
    'message_hub': {'log_scalars': {'train/loss': np.array([1.5, 1.25])}},
    'state_dict': {'w': torch.ones(2)}}, path)."""
    from pathlib import Path
    path = Path(__file__).parent / 'data' / 'numpy2_checkpoint.pth'
    assert b'numpy._core.multiarray' in zipfile_data(path)
    ckpt = load_checkpoint_file(path)
    assert ckpt['meta'] == {'seed': 7, 'lr': 0.5}
    assert ckpt['message_hub']['log_scalars']['train/loss'].tolist() == [
        1.5, 1.25]
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def zipfile_data(path) -> bytes:
    """The pickle inside a torch checkpoint file."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist()
                           if n.endswith('data.pkl')))
