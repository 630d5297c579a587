"""The linear-probe and fine-tune configs of configs/benchmarks/mmpretrain,
shrunk in the test to the ``mrcl_checkpoint`` fixture's encoder (width 192,
6 layers, 3 heads, 32 px, patch 4) and the real CIFAR-10 sample."""
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mrcl_plugin.checkpoints import CheckpointError, load_checkpoint_file
from mrcl_plugin.checkpoints.converters import to_mmpretrain
from mrcl_testing import experiment_name

BENCHMARKS = 'configs/benchmarks/mmpretrain/'
LINEAR = BENCHMARKS + 'vit-base-p16_8xb128-linear-coslr-100e_in1k.py'
FINETUNE = BENCHMARKS + 'vit-base-p16_8xb128-coslr-100e_in1k.py'
SMALL_VIT = dict(
    arch=dict(
        _delete_=True,  # the base names an arch ('base')
        embed_dims=192,
        num_layers=6,
        num_heads=3,
        feedforward_channels=768),
    img_size=32,
    patch_size=4)


def cifar_loader(data_root, split, num_images, pipeline):
    """``num_images`` of the sample's split, every class alike (the
    annotation files list the images class by class)."""
    total = 20000 if split == 'train' else 10000
    return dict(
        batch_size=8,
        num_workers=0,
        persistent_workers=False,
        dataset=dict(
            _delete_=True,
            type='CustomDataset',
            data_root=str(data_root / 'cls' / 'cifar10'),
            ann_file=f'meta/{split}.txt',
            data_prefix=split,
            indices=list(range(0, total, total // num_images))[:num_images],
            pipeline=pipeline))


def small_linear_probe(repo_root, data_root, encoder, work_dir, **changes):
    """The real linear-probe config with the sizes of the test."""
    cfg = Config.fromfile(str(repo_root / LINEAR))
    train = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=32, backend='pillow'),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')
    ]
    test = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'experiment_name': experiment_name('linear'),
        'model.backbone': dict(SMALL_VIT, frozen_stages=6),
        'model.backbone.init_cfg.checkpoint': str(encoder),
        'model.head': dict(in_channels=192, num_classes=10),
        'data_preprocessor.num_classes': 10,
        'train_dataloader': cifar_loader(data_root, 'train', 24, train),
        'val_dataloader': None,  # evaluated once, by runner.test()
        'val_cfg': None,
        'val_evaluator': None,
        'test_dataloader': cifar_loader(data_root, 'test', 40, test),
        'test_evaluator': dict(topk=(1, )),
        'train_cfg.max_epochs': 1,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
        **changes,
    })
    return cfg


def test_linear_probe_config_is_the_papers(repo_root):
    """Sec. 4.1 (MoCo v3's protocol) at full size: ViT-B/16 frozen whole,
    final norm included, class token, SGD lr 0.2 at 8 x 128, momentum 0.9,
    wd 0, 100 cosine epochs, random resized crop + flip only."""
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(repo_root / LINEAR))
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.2, momentum=0.9, weight_decay=0.)
    assert cfg.train_dataloader.batch_size * 8 == 1024
    assert cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.train_cfg.max_epochs == 100
    [cosine] = cfg.param_scheduler
    assert (cosine.type, cosine.T_max, cosine.end) == ('CosineAnnealingLR',
                                                        100, 100)
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs'
    ]
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert (backbone.embed_dims, backbone.num_layers,
            backbone.patch_embed.projection.kernel_size) == (768, 12, (16, 16))
    assert backbone.out_type == 'cls_token' and backbone.final_norm
    assert not any(p.requires_grad for p in backbone.parameters())
    model.train()
    assert not any(layer.training for layer in backbone.layers)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        'head.layers.head.weight', 'head.layers.head.bias'
    ]


@pytest.fixture(scope='module')
def encoder(mrcl_checkpoint, tmp_path_factory):
    """The fixture's encoder converted with to_mmpretrain."""
    path = tmp_path_factory.mktemp('encoder') / 'encoder.pth'
    torch.save(to_mmpretrain(str(mrcl_checkpoint)), path)
    return path


class RecordBackbone(Hook):
    """Copies of the backbone and head after init, and the train/eval mode
    of the frozen encoder during the iterations."""

    def before_train(self, runner):
        model = runner.model
        self.backbone = {
            k: v.clone()
            for k, v in model.backbone.state_dict().items()
        }
        self.head = {k: v.clone() for k, v in model.head.state_dict().items()}
        self.modes = []

    def after_train_iter(self, runner, batch_idx, data_batch, outputs):
        backbone = runner.model.backbone
        self.modes.append(
            [m.training for m in (backbone.patch_embed, *backbone.layers)])


def test_linear_probe_trains_only_the_head(repo_root, data_root, encoder,
                                           tmp_path):
    cfg = small_linear_probe(repo_root, data_root, encoder, tmp_path)
    runner = Runner.from_cfg(cfg)
    record = RecordBackbone()
    runner.register_hook(record)
    runner.train()
    metrics = runner.test()

    converted = load_checkpoint_file(str(encoder))['state_dict']
    model = runner.model
    after = model.backbone.state_dict()
    # Loaded: before training every encoder tensor equals the converted one.
    assert record.backbone.keys() == converted.keys() == after.keys()
    for key, value in converted.items():
        assert torch.equal(record.backbone[key], value), key
        # Frozen: unchanged after 3 SGD steps at lr 0.2.
        assert torch.equal(after[key], value), key
    for name, param in model.backbone.named_parameters():
        assert not param.requires_grad and param.grad is None, name
    # The layers stay in eval mode through every iteration; the final norm
    # (LayerNorm: no running statistics) is among the unchanged tensors.
    assert len(record.modes) == 3
    assert not any(any(modes) for modes in record.modes)
    assert 'ln1.weight' in converted and 'ln1.bias' in converted
    # Only the head moved.
    head = model.head.state_dict()
    assert all(p.requires_grad for p in model.head.parameters())
    assert all(not torch.equal(record.head[k], head[k]) for k in head)
    assert 0 <= metrics['accuracy/top1'] <= 100


class OverwriteAfterInit(Hook):
    """What an init after the checkpoint's would do (MoCoV3ViT re-inits
    everything unless its init_cfg type is exactly 'Pretrained')."""
    priority = 'HIGHEST'

    def before_train(self, runner):
        torch.nn.init.zeros_(runner.model.backbone.cls_token)


def test_linear_probe_stops_on_a_wrong_checkpoint(repo_root, data_root,
                                                  mrcl_checkpoint, encoder,
                                                  tmp_path):
    """Each stops the run before its first iteration."""
    missing = tmp_path / 'no_such_encoder.pth'
    cfg = small_linear_probe(repo_root, data_root, missing, tmp_path / 'a')
    with pytest.raises(CheckpointError, match=f'^{missing}: no such file$'):
        Runner.from_cfg(cfg).train()
    # Loaded, then overwritten.
    cfg = small_linear_probe(repo_root, data_root, encoder, tmp_path / 'b')
    runner = Runner.from_cfg(cfg)
    runner.register_hook(OverwriteAfterInit())
    with pytest.raises(ValueError, match=rf'^{encoder} does not fit model.'
                       r'backbone.*1 tensors did not arrive \[cls_token\]'):
        runner.train()
    # Unconverted: the whole pretraining checkpoint has 'backbone.' keys,
    # which mmengine's Pretrained init would skip with a log line.
    cfg = small_linear_probe(repo_root, data_root, mrcl_checkpoint,
                             tmp_path / 'c')
    with pytest.raises(
            ValueError, match=rf'^{mrcl_checkpoint} does not fit '
            r'model.backbone \(MoCoV3ViT.*: 78 missing keys.*unexpected '
            r'keys \[backbone.cls_token'):
        Runner.from_cfg(cfg).train()
    # Unset: the config's default.
    cfg = small_linear_probe(repo_root, data_root, '', tmp_path / 'd')
    with pytest.raises(
            ValueError, match=r'^model.backbone.init_cfg.checkpoint is '
            'empty: pass --cfg-options model.backbone.init_cfg.checkpoint'):
        Runner.from_cfg(cfg).train()


def test_finetune_config_loads_the_encoder_and_decays_lr_by_layer(
        repo_root, data_root, encoder, tmp_path):
    """The fine-tune config through its whole chain (mmpretrain's MAE
    recipe: RandAugment, Mixup/CutMix, layer decay) for one iteration."""
    cfg = Config.fromfile(str(repo_root / FINETUNE))
    train = cfg.train_dataloader.dataset.pipeline
    assert train[1].type == 'RandomResizedCrop'
    train[1].scale = 32
    cfg.merge_from_dict({
        'work_dir': str(tmp_path),
        'model.backbone': SMALL_VIT,
        'model.backbone.init_cfg.checkpoint': str(encoder),
        'model.head': dict(in_channels=192, num_classes=10),
        'data_preprocessor.num_classes': 10,
        'train_dataloader': cifar_loader(data_root, 'train', 8, train),
        'val_dataloader': None,
        'val_cfg': None,
        'val_evaluator': None,
        'train_cfg.max_epochs': 1,
    })
    runner = Runner.from_cfg(cfg)
    record = RecordBackbone()
    runner.register_hook(record)
    runner.train()

    converted = load_checkpoint_file(str(encoder))['state_dict']
    # MAE's recipe: no final norm (ln1), a new norm on the mean token (ln2).
    assert set(record.backbone) ^ set(converted) == {
        'ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias'
    }
    for key in set(record.backbone) & set(converted):
        assert torch.equal(record.backbone[key], converted[key]), key
    # End to end: the encoder moved too.
    after = runner.model.backbone.state_dict()
    assert not torch.equal(after['layers.0.attn.qkv.weight'],
                           converted['layers.0.attn.qkv.weight'])
    # lr scale 0.65 ** (7 - depth): depth 0 the stem, i + 1 layer i, 7 the
    # rest (6 layers).
    scales = {
        group['param_name']: group['lr_scale']
        for group in runner.optim_wrapper.optimizer.param_groups
    }
    expected = {
        'backbone.cls_token': 0.65**7,
        'backbone.pos_embed': 0.65**7,
        'backbone.patch_embed.projection.weight': 0.65**7,
        'backbone.layers.0.attn.qkv.weight': 0.65**6,
        'backbone.layers.5.ffn.layers.1.weight': 0.65**1,
        'backbone.ln2.weight': 1.,
        'head.fc.weight': 1.,
    }
    for name, scale in expected.items():
        assert scales[name] == pytest.approx(scale), name
