"""The checkpoint converters on a real few-iteration MRCL pretraining run:
the exports load strictly into mmpretrain's and timm's VisionTransformer and
give our features on real CIFAR-10 images; the tools refuse what is not an
MRCL checkpoint with one line, running nothing (mrcl2timm as a command line,
mrcl2mmpretrain's same ``main`` in-process)."""
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mrcl_testing import build, cifar_images

from mrcl_plugin.checkpoints import (CheckpointError, atomic_path,
                                    load_checkpoint_file)
from mrcl_plugin.checkpoints.converters import convert_file, main, to_timm

ROOT = Path(__file__).resolve().parents[1]
SMALL_CONFIG = ROOT / (
    'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
IN1K_CONFIG = ROOT / ('configs/mrcl/'
                      'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py')
TOOLS = ('mrcl2mmpretrain', 'mrcl2timm')
# What the pretraining-only modules of the small config hold.
LEFT_OVER = {'decoder': 32, 'neck': 13, 'head': 3}
ENCODER = dict(embed_dims=192, num_layers=6, num_heads=3,
               feedforward_channels=768)


class _RunsCode:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _bad_files(folder: Path, mrcl_checkpoint: Path) -> dict:
    """name -> (file, what the one-line error must say)."""
    files = {}
    path = folder / 'random.pth'
    path.write_bytes(random.Random(0).randbytes(4096))
    files['random_bytes'] = (path, 'not a torch checkpoint')

    data = mrcl_checkpoint.read_bytes()
    path = folder / 'truncated.pth'
    path.write_bytes(data[:len(data) // 2])
    files['truncated'] = (path, 'truncated or corrupt checkpoint')

    # An mmpretrain classifier with the same ViT: its backbone.* keys are
    # those of an MRCL encoder, only the meta tells them apart.
    model_cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch=ENCODER, img_size=32,
                      patch_size=4),
        head=dict(type='VisionTransformerClsHead', num_classes=10,
                  in_channels=192))
    classifier = build(model_cfg)
    path = folder / 'classifier.pth'
    torch.save(dict(meta=dict(cfg=Config(dict(model=model_cfg)).pretty_text,
                              iter=10),
                    state_dict=classifier.state_dict()), path)
    files['classifier'] = (
        path, "not an MRCL checkpoint: no meta['mrcl'] (MRCLMetaHook writes "
        'it; this is a checkpoint of ImageClassifier)')

    # torch's own zip format, an MRCL-looking config, and a tensor that
    # would run a shell command when unpickled.
    path = folder / 'runs_code.pth'
    torch.save(dict(meta=dict(cfg="model = dict(type='MRCL')"),
                    state_dict={'backbone.cls_token':
                                _RunsCode(folder / 'PWNED')}), path)
    files['runs_code'] = (path, 'refused: it pickles posix.system')
    return files


@pytest.fixture(scope='module')
def tool_runs(mrcl_checkpoint, tmp_path_factory):
    """Both tools on the real checkpoint and on every bad file, run as
    command lines (a few at a time: each starts a fresh Python)."""
    folder = tmp_path_factory.mktemp('converters')
    cases = dict(_bad_files(folder, mrcl_checkpoint),
                 good=(mrcl_checkpoint, None))
    # two at a time on one thread each: the 2-core machine's size
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')

    def run(tool_case):
        tool, case = tool_case
        out = folder / tool / f'{case}.pth'
        proc = subprocess.run(
            [sys.executable, f'tools/model_converters/{tool}.py',
             str(cases[case][0]), str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        return tool_case, (proc, out)

    # Every bad file through one tool as a command line; the other tool is
    # the same converters.main, run in-process on them by the test (a fresh
    # Python costs ~5 s of CPU, the test budget is 60 s on 2 cores).
    jobs = [('mrcl2timm', case) for case in cases] + [
        ('mrcl2mmpretrain', 'good')]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(pool.map(run, jobs))
    return dict(runs=runs, cases=cases, folder=folder)


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize(
    'case', ['random_bytes', 'truncated', 'classifier', 'runs_code'])
def test_tool_refuses_with_one_line(tool_runs, capsys, tool, case):
    src, reason = tool_runs['cases'][case]
    if (tool, case) in tool_runs['runs']:
        proc, out = tool_runs['runs'][tool, case]
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        out = tool_runs['folder'] / tool / f'{case}.pth'
        code = main(tool[len('mrcl2'):], [str(src), str(out)])
        stdout, stderr = capsys.readouterr()
    assert code == 1, stdout + stderr
    assert stdout == ''
    message = stderr.strip()
    assert '\n' not in message, message
    assert message.startswith(f'error: {src}: '), message
    assert reason in message, message
    # nothing written, not even a temporary file, and nothing was run
    assert not out.exists() and not list(out.parent.glob(f'.{out.name}*'))
    assert not (tool_runs['folder'] / 'PWNED').exists()


@pytest.mark.parametrize('tool, renamed', [
    ('mrcl2mmpretrain', 'backbone.layers.{i}.attn.qkv.weight -> '
     'layers.{i}.attn.qkv.weight'),
    ('mrcl2timm', 'backbone.layers.{i}.ffn.layers.0.0.weight -> '
     'blocks.{i}.mlp.fc1.weight'),
])
def test_tool_lists_converted_and_left_over_keys(tool_runs, tool, renamed):
    proc, out = tool_runs['runs'][tool, 'good']
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ('converted 78 tensors of the encoder '
                        '(6 layers, {i} = 0..5):')
    assert f'  {renamed}' in lines
    assert 'left over, not exported (48 tensors of the pretraining-only ' \
           'modules):' in lines
    assert {f'  {m}.*: {n}' for m, n in LEFT_OVER.items()} <= set(lines)
    assert 'load into the' in lines[-2] and lines[-2].endswith(': ok')
    assert lines[-1] == f'wrote {out}'
    assert len(lines) < 30  # one line per kind of key, not per tensor
    assert [p.name for p in out.parent.iterdir()] == ['good.pth']


@pytest.fixture(scope='module')
def mrcl_features(mrcl_checkpoint):
    """The pretrained MRCL model's own class-token features of 16 real
    CIFAR-10 test images (unmasked, after the final norm)."""
    cfg = Config.fromfile(str(SMALL_CONFIG))
    model = build(cfg.model).eval()
    model.load_state_dict(load_checkpoint_file(mrcl_checkpoint)['state_dict'])
    x = cifar_images(16)
    with torch.no_grad():
        return x, model.backbone(x, mask=None)[0][:, 0]


def _common_meta(meta, mrcl_checkpoint):
    assert {k: meta[k] for k in ENCODER} == ENCODER
    assert meta['arch'] == ENCODER
    assert (meta['patch_size'], meta['img_size']) == (4, 32)
    assert (meta['learner'], meta['mask_ratio'], meta['iter']) == (
        'barlowtwins', 0.2, 4)
    assert meta['left_over'] == LEFT_OVER
    assert meta['source'] == str(mrcl_checkpoint)


def test_mmpretrain_export_loads_strictly_and_gives_our_features(
        tool_runs, mrcl_features, mrcl_checkpoint):
    from mmpretrain.models import VisionTransformer
    ckpt = load_checkpoint_file(tool_runs['runs']['mrcl2mmpretrain',
                                                  'good'][1])
    meta = ckpt['meta']
    _common_meta(meta, mrcl_checkpoint)
    assert not any(k.startswith('backbone.') for k in ckpt['state_dict'])
    vit = VisionTransformer(arch=meta['arch'], img_size=meta['img_size'],
                            patch_size=meta['patch_size'])
    vit.load_state_dict(ckpt['state_dict'], strict=True)
    vit.eval()  # mmpretrain's train() returns None: no chaining
    x, ours = mrcl_features
    with torch.no_grad():
        torch.testing.assert_close(vit(x)[0], ours, rtol=1e-5, atol=1e-5)


def test_timm_export_loads_strictly_and_gives_our_features(
        tool_runs, mrcl_features, mrcl_checkpoint):
    import timm
    out = tool_runs['runs']['mrcl2timm', 'good'][1]
    meta = load_checkpoint_file(out)['meta']
    _common_meta(meta, mrcl_checkpoint)
    # 6 layers is no registered timm arch: the kwargs say it all
    assert meta['timm_model'] is None
    assert meta['timm_kwargs'] == dict(
        img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
        mlp_ratio=4.0, num_classes=0, global_pool='token')
    # the config's CIFAR-10 mean/std, on 0-1 pixels
    assert meta['pretrained_cfg'] == dict(
        input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.201))
    model = timm.models.VisionTransformer(**meta['timm_kwargs']).eval()
    timm.models.load_checkpoint(model, str(out), strict=True)
    x, ours = mrcl_features
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x)[:, 0], ours, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def in1k_cfg(data_root):
    """The ImageNet MR-BarlowTwins config (ViT-B/16, 224 px)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv('MRCL_DATA', str(data_root))
        cfg = Config.fromfile(str(IN1K_CONFIG))
    assert cfg.model.backbone.arch == 'b'
    return cfg


@pytest.mark.parametrize('arch, timm_model', [
    ('b', 'vit_base_patch16_224'),
    ('deit-small', 'vit_small_patch16_224'),
    ('deit-tiny', 'vit_tiny_patch16_224'),
])
def test_standard_archs_export_to_timms_registered_models(
        in1k_cfg, tmp_path, arch, timm_model):
    import timm
    from mmpretrain.registry import MODELS
    # torch's default init of the layers (mmpretrain's ViT-B init is slow),
    # random class token and position embedding, so each tensor counts
    backbone = MODELS.build(dict(type='mmpretrain.MRCLViT', arch=arch,
                                 img_size=224, patch_size=16))
    backbone.eval()
    for token in (backbone.cls_token, backbone.pos_embed):
        torch.nn.init.normal_(token, std=0.02)
    src = tmp_path / 'mrcl.pth'
    # what MRCLMetaHook saves for the ImageNet config with this arch
    zoo = backbone.arch_settings
    mrcl = dict(type='MRBarlowTwins', learner='barlowtwins', mask_ratio=0.2,
                encoder=dict(embed_dims=zoo['embed_dims'],
                             num_layers=zoo['num_layers'],
                             num_heads=zoo['num_heads'],
                             feedforward_channels=zoo['feedforward_channels'],
                             patch_size=16, img_size=224),
                mean=list(in1k_cfg.data_preprocessor.mean),
                std=list(in1k_cfg.data_preprocessor.std))
    torch.save(dict(meta=dict(mrcl=mrcl, iter=0),
                    state_dict={f'backbone.{k}': v
                                for k, v in backbone.state_dict().items()}),
               src)
    ckpt = to_timm(src)
    meta = ckpt['meta']
    assert meta['timm_model'] == timm_model
    assert meta['pretrained_cfg'] == dict(
        input_size=(3, 224, 224), mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225))
    # weight_init='skip': the weights are loaded next (saves test time)
    model = timm.create_model(meta['timm_model'], pretrained=False,
                              weight_init='skip',
                              **meta['timm_kwargs']).eval()
    model.load_state_dict(ckpt['state_dict'], strict=True)
    x = torch.nn.functional.interpolate(cifar_images(2), size=224,
                                        mode='bilinear')
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x)[:, 0],
            backbone(x, mask=None)[0][:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('target, missing', [('mmpretrain', 'ln1.weight'),
                                             ('timm', 'norm.weight')])
def test_strict_check_names_missing_keys(mrcl_checkpoint, tmp_path, target,
                                         missing):
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    for key in ('backbone.ln1.weight', 'backbone.ln1.bias'):
        del ckpt['state_dict'][key]
    src, dst = tmp_path / 'no_final_norm.pth', tmp_path / 'out.pth'
    torch.save(ckpt, src)
    with pytest.raises(CheckpointError) as error:
        convert_file(src, dst, target)
    message = str(error.value)
    assert message.startswith(f'{src}: the converted encoder does not load '
                              'strictly into ')
    norm = missing.rsplit('.', 1)[0]
    assert f'2 missing keys [{norm}.bias, {norm}.weight]' in message
    assert '\n' not in message
    assert not dst.exists()
    convert_file(src, dst, target, strict=False)
    assert missing not in load_checkpoint_file(dst)['state_dict']


def save_atomic(obj, dst):
    with atomic_path(dst) as partial:
        torch.save(obj, partial)


def test_failed_save_keeps_the_previous_file(tmp_path):
    dst = tmp_path / 'out.pth'
    save_atomic({'x': torch.ones(2)}, dst)
    with pytest.raises(Exception):
        save_atomic({'x': lambda: None}, dst)  # cannot be pickled
    assert torch.equal(torch.load(dst, weights_only=True)['x'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ['out.pth']


# -- MAE checkpoints: mmpretrain's and the official release's layout ---------

MAE_CONFIG = Path(__import__('mmpretrain').__file__).parent / (
    '.mim/configs/mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py')


def _randomised(model):
    """Every tensor random and distinct, so a misplaced one shows."""
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def mmpretrain_mae_file(folder: Path) -> Path:
    """mmpretrain's MAE (its own ViT-B config, shrunk to the small encoder
    at 32 px, patch 16), saved as its runner saves a checkpoint."""
    cfg = Config.fromfile(str(MAE_CONFIG))
    cfg.model.backbone.update(arch=dict(ENCODER), img_size=32)
    cfg.model.neck.update(num_patches=4, embed_dim=192, decoder_embed_dim=32,
                          decoder_depth=1, decoder_num_heads=4)
    model = _randomised(build(cfg.model))
    path = folder / 'mae_mmpretrain.pth'
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, iter=7),
                    state_dict=model.state_dict()), path)
    return path


def mae_release_file(folder: Path):
    """MAE's official layout (models_mae.py: timm's ViT blocks, the
    decoder beside them) from timm's modules; the encoder, for reference."""
    from timm.models.vision_transformer import Block, VisionTransformer
    encoder = _randomised(VisionTransformer(
        img_size=32, patch_size=16, embed_dim=192, depth=6, num_heads=3,
        mlp_ratio=4.0, num_classes=0, global_pool='token'))
    decoder = _randomised(torch.nn.ModuleDict(dict(
        decoder_embed=torch.nn.Linear(192, 32),
        decoder_blocks=torch.nn.ModuleList([Block(32, 4, qkv_bias=True)]),
        decoder_norm=torch.nn.LayerNorm(32),
        decoder_pred=torch.nn.Linear(32, 16 * 16 * 3))))
    model = dict(encoder.state_dict(), **decoder.state_dict(),
                 mask_token=torch.randn(1, 1, 32),
                 decoder_pos_embed=torch.randn(1, 5, 32))
    path = folder / 'mae_pretrain_vit_small.pth'
    torch.save(dict(model=model), path)
    return path, encoder.eval(), model


def _encoder_meta_is_mae(meta, path):
    assert meta['learner'] == 'mae'
    assert meta['arch'] == ENCODER
    assert (meta['patch_size'], meta['img_size']) == (16, 32)
    assert meta['source'] == str(path)


def test_mmpretrain_mae_converts_to_its_encoder(tmp_path):
    src = mmpretrain_mae_file(tmp_path)
    state = load_checkpoint_file(src)['state_dict']
    dst = tmp_path / 'encoder.pth'
    assert main('mmpretrain', [str(src), str(dst)]) == 0
    ckpt = load_checkpoint_file(dst)
    _encoder_meta_is_mae(ckpt['meta'], src)
    assert (ckpt['meta']['mask_ratio'], ckpt['meta']['iter']) == (0.75, 7)
    assert set(ckpt['meta']['left_over']) == {'neck'}
    encoder = {k: v for k, v in state.items() if k.startswith('backbone.')}
    assert len(ckpt['state_dict']) == len(encoder) == 78
    for key, tensor in ckpt['state_dict'].items():
        assert torch.equal(tensor, encoder['backbone.' + key]), key


def test_mae_release_converts_to_the_same_encoder(tmp_path):
    from mmpretrain.models import VisionTransformer
    src, timm_vit, model = mae_release_file(tmp_path)
    dst = tmp_path / 'encoder.pth'
    report = convert_file(src, dst, 'mmpretrain')
    assert 'blocks.{i}.attn.qkv.weight -> layers.{i}.attn.qkv.weight' \
        in report
    ckpt = load_checkpoint_file(dst)
    meta = ckpt['meta']
    _encoder_meta_is_mae(meta, src)
    assert meta['left_over'] == {'decoder_embed': 2, 'decoder_blocks': 12,
                                 'decoder_norm': 2, 'decoder_pred': 2,
                                 'mask_token': 1, 'decoder_pos_embed': 1}
    # each encoder tensor of the release, once and unchanged
    source = {k: v for k, v in model.items()
              if not k.startswith(('decoder', 'mask_token'))}
    converted = ckpt['state_dict']
    assert len(converted) == len(source) == 78
    for key, tensor in source.items():
        same = [k for k, v in converted.items()
                if v.shape == tensor.shape and torch.equal(v, tensor)]
        assert len(same) == 1, key
    # and mmpretrain's ViT on it computes timm's (MAE's) features
    vit = VisionTransformer(arch=meta['arch'], img_size=32, patch_size=16)
    vit.load_state_dict(converted, strict=True)
    vit.eval()
    x = cifar_images(4)
    with torch.no_grad():
        torch.testing.assert_close(vit(x)[0],
                                   timm_vit.forward_features(x)[:, 0],
                                   rtol=1e-5, atol=1e-5)
