"""Dense evaluation of frozen patch tokens (mrcl_plugin/evaluation/dense.py):
the Hummingbird retrieval against a brute-force reference, its fixed points
(one-hot features, a constant feature), its independence of order and
chunking, the linear patch probe, memory-bank augmentation, the
DenseKNNHook inside a short pretraining and tools/analysis_tools/
dense_eval.py; all on the real COCO sample in the ADE layout
(coco_semseg_ade_layout: 200 images, 133 classes)."""
import json
import math
import re
import shutil
from dataclasses import replace
from types import SimpleNamespace

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from conftest import SMALL_CIFAR_CONFIG, TINY_IMAGENET_CONFIG
from mrcl_plugin.checkpoints.converters import convert_file
from mrcl_plugin.engine.hooks import DenseKNNHook
from mrcl_plugin.evaluation import (SegFolderError, build_model, dense_eval,
                                    dense_knn, dense_linear, load_seg_folder,
                                    patch_features)
from mrcl_plugin.evaluation.dense import folds_of, knn_patch_labels
from mrcl_plugin.evaluation.intervals import summarise
from mrcl_plugin.evaluation.seg_data import (IGNORE, augment_bank,
                                             patch_labels)
from mrcl_testing import TINY_TRAIN_OPTIONS, experiment_name, run_tool

COCO = 'coco_semseg_ade_layout'
PATCH = 8  # the tiny-imagenet config's patch size
TEMPERATURES = (0.02, 0.07)
# the tiny-imagenet config at the tests' ViT sizes (width 64, 2 layers)
TINY_MODEL = {k: v for k, v in TINY_TRAIN_OPTIONS.items()
              if k.startswith('model.')}


# -- fixtures -----------------------------------------------------------------


def tiny_imagenet_cfg(data_root, **options) -> Config:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MRCL_DATA', str(data_root))
        cfg = Config.fromfile(str(TINY_IMAGENET_CONFIG))
    cfg.merge_from_dict(dict(TINY_MODEL, **options))
    return cfg


@pytest.fixture(scope='module')
def coco64(data_root):
    """The 100 validation images of the COCO sample at 64 px (8 x 8
    patches of 8 px)."""
    return load_seg_folder(str(data_root / COCO), 64, ['validation'])


@pytest.fixture(scope='module')
def tiny_model(data_root):
    """The tiny-imagenet MR-BarlowTwins config, 2 layers of width 64,
    randomly initialised (seed 0), in eval mode."""
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    return build_model(tiny_imagenet_cfg(data_root))


@pytest.fixture(scope='module')
def tiny_feats(tiny_model, coco64):
    """Patch tokens of the last block of the first 24 images."""
    return patch_features(tiny_model, coco64.images[:24], blocks=(1, ))[1]


# -- the retrieval ------------------------------------------------------------


def brute_force_knn(bank_feats, bank_labels, query_feats, k, t):
    """Per query: cosine similarity to every bank row, the k largest,
    softmax(sim / T) over them, the weighted mean of their labels; float64,
    one pair at a time."""
    bank = bank_feats.double().numpy()
    labels = bank_labels.double().numpy()
    out = []
    for q in query_feats.double().numpy():
        sims = [float(np.dot(q, b) / (np.linalg.norm(q) * np.linalg.norm(b)))
                for b in bank]
        top = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        exps = [math.exp((sims[j] - sims[top[0]]) / t) for j in top]
        dist = sum(e / sum(exps) * labels[j] for e, j in zip(exps, top))
        out.append(dist)
    return torch.tensor(np.stack(out))


@pytest.fixture(scope='module')
def retrieval_case(tiny_model, coco64):
    """Real soft labels and patch tokens of 4 images: the labelled patches
    of images 1-3 are the bank, all 64 patches of image 0 the queries; the
    brute-force answer for k = 10 at both temperatures."""
    data = coco64.subset(range(4))
    feats = patch_features(tiny_model, data.images, blocks=(1, ))[1]
    labels = patch_labels(data.masks, PATCH, data.num_classes)
    bank_feats, bank_labels = feats[1:].flatten(0, 2), labels[1:].flatten(0, 2)
    labelled = bank_labels.sum(1) > 0
    bank = bank_feats[labelled], bank_labels[labelled]
    queries = feats[0].flatten(0, 1)
    k = 10
    # the k-th and (k+1)-th neighbours are told apart well above float32
    # rounding (~1e-7 on these sums of 64 products), so the top k of the
    # code and of the float64 reference are one set
    sims = (queries.double() @ bank[0].double().T).sort(1, descending=True)
    assert (sims.values[:, k - 1] - sims.values[:, k]).min() > 2e-6
    assert len(bank[0]) > 150 and (bank[1].max(1).values < 1).any()
    expected = {t: brute_force_knn(*bank, queries, k, t)
                for t in TEMPERATURES}
    return bank, queries, k, expected


@pytest.mark.parametrize('query_chunk, bank_chunk', [(7, 50), (7, 3),
                                                     (1024, 32768)])
def test_retrieval_equals_brute_force(retrieval_case, query_chunk,
                                      bank_chunk):
    """The chunked search (a running top-k over bank chunks, some smaller
    than k) finds the brute-force neighbours and weights."""
    (bank_feats, bank_labels), queries, k, expected = retrieval_case
    got = knn_patch_labels(bank_feats, bank_labels, queries, k, TEMPERATURES,
                           query_chunk=query_chunk, bank_chunk=bank_chunk)
    assert set(got) == set(TEMPERATURES)
    for t in TEMPERATURES:
        assert got[t].shape == expected[t].shape == (64, 133)
        torch.testing.assert_close(got[t].double(), expected[t], rtol=1e-4,
                                   atol=1e-5)
    # the two temperatures weigh differently
    assert not torch.allclose(got[0.02], got[0.07], atol=1e-3)
    with pytest.raises(ValueError, match='k=999 is more than'):
        knn_patch_labels(bank_feats, bank_labels, queries, 999)


# -- fixed points -------------------------------------------------------------


def patch_class_map(masks):
    """(N, h, w): each patch's class, that of its top-left pixel (IGNORE
    where it is unlabelled)."""
    return masks[:, ::PATCH, ::PATCH]


def to_pixels(patch_map):
    return patch_map.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)


def twins(data, masks):
    """Each image twice, as ``img<i>_0.jpg`` and ``img<i>_1.jpg`` (adjacent
    when sorted, so 2 folds part every pair), with ``masks``."""
    idx = [i for i in range(len(data.names)) for _ in range(2)]
    names = tuple(f'img{i:03d}_{c}.jpg' for i in range(len(data.names))
                  for c in range(2))
    return idx, replace(data.subset(idx), masks=masks[idx], names=names)


def test_one_hot_label_features_score_100(coco64):
    """Features that are each patch's one-hot class: every query patch's
    twin (in the other fold's bank) has similarity 1, every other class 0,
    so retrieval and the linear probe both predict every patch right.

    The masks are made constant per patch, and scored only inside their
    regions (the pixels of patches whose 8 neighbours share their class):
    the patch scores are upsampled bilinearly, which blends a patch with
    its neighbours towards its corners, so even perfect patch predictions
    miss corner pixels at region boundaries (92 mIoU on these images with
    every pixel scored)."""
    data = coco64.subset(range(12))
    patch_map = patch_class_map(data.masks)
    padded = F.pad(patch_map[:, None].float(), (1, 1, 1, 1),
                   mode='replicate')[:, 0].long()
    inside = patch_map != IGNORE
    for dy in range(3):
        for dx in range(3):
            inside &= padded[:, dy:dy + 8, dx:dx + 8] == patch_map
    masks = to_pixels(torch.where(inside, patch_map, IGNORE))
    idx, twinned = twins(data, masks)
    fold = folds_of(twinned.names, 2)
    assert fold.tolist() == [0, 1] * 12
    scored = masks[masks != IGNORE]
    assert 0.2 < len(scored) / masks.numel() < 0.5
    assert len(scored.unique()) >= 15  # classes scored

    labelled = patch_map != IGNORE
    one_hot = torch.zeros(12, 8, 8, data.num_classes)
    one_hot[labelled] = F.one_hot(patch_map[labelled],
                                  data.num_classes).float()
    feats = F.normalize(one_hot, dim=-1)[idx]
    areas = dense_knn(feats, twinned, PATCH, folds=2, k=30,
                      temperatures=TEMPERATURES)
    for t in TEMPERATURES:
        assert len(areas[t]) == 2
        assert summarise(areas[t], bootstrap=0)['miou'] == pytest.approx(100)
    linear = dense_linear(feats, twinned, PATCH, folds=2, epochs=100,
                          lr=0.01)
    assert summarise(linear, bootstrap=0)['miou'] == pytest.approx(100)
    # without the twins, a class of one image only is in no other fold's
    # bank: the queries' own patches are not in theirs
    alone = replace(data, masks=masks)
    areas = dense_knn(F.normalize(one_hot, dim=-1), alone, PATCH, folds=2,
                      k=30, temperatures=(0.02, ))[0.02]
    assert summarise(areas, bootstrap=0)['miou'] < 50


def test_constant_feature_predicts_the_banks_majority_class(coco64):
    """All features equal and k the whole bank: every query patch gets the
    bank's mean patch label, so every labelled pixel of a fold is predicted
    as the most frequent class of the other fold (by labelled pixels; here
    also by the summed per-patch fractions, the protocol's weighting)."""
    masks = coco64.masks.numpy()
    # 10 images whose every patch has a labelled pixel: each fold's bank is
    # 5 x 64 labelled patches
    full = [i for i in range(len(masks)) if all(
        (masks[i, y:y + PATCH, x:x + PATCH] != IGNORE).any()
        for y in range(0, 64, PATCH) for x in range(0, 64, PATCH))][:10]
    data = coco64.subset(full)
    num_classes = data.num_classes
    fold = folds_of(data.names, 2)
    assert sorted(fold.tolist()) == [0] * 5 + [1] * 5
    feats = F.normalize(torch.ones(10, 8, 8, 16), dim=-1)
    areas = dense_knn(feats, data, PATCH, folds=2, k=5 * 64,
                      temperatures=(0.07, ))[0.07]
    majorities = set()
    for f in range(2):
        pixels, fractions = np.zeros(num_classes), np.zeros(num_classes)
        for i in (fold != f).nonzero()[:, 0].tolist():
            mask = data.masks[i].numpy()
            pixels += np.bincount(mask[mask != IGNORE], minlength=num_classes)
            for y in range(0, 64, PATCH):
                for x in range(0, 64, PATCH):
                    patch = mask[y:y + PATCH, x:x + PATCH]
                    patch = patch[patch != IGNORE]
                    fractions += np.bincount(
                        patch, minlength=num_classes) / len(patch)
        majority = int(pixels.argmax())
        assert int(fractions.argmax()) == majority
        majorities.add(majority)
        queries = data.masks[fold == f]
        predicted = areas[f][:, 1].sum(0)  # labelled pixels, per class
        assert predicted[majority] == (queries != IGNORE).sum() > 0
        assert predicted.sum() == predicted[majority]
        # one class predicted: IoU of that class alone, 0 for the others
        inter = areas[f][:, 0].sum(0)
        assert inter.sum() == inter[majority]
    assert len(majorities) == 2  # the folds' banks differ in majority


def test_result_independent_of_image_order_and_chunks(coco64, tiny_feats):
    """The folds come from the names, so permuting the images (and their
    features alike) and changing the chunk sizes changes nothing."""
    data = coco64.subset(range(24))
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(24))
    kwargs = dict(folds=3, k=10, temperatures=TEMPERATURES)
    plain = dense_knn(tiny_feats, data, PATCH, **kwargs)
    permuted = dense_knn(tiny_feats[perm], data.subset(perm.tolist()), PATCH,
                         query_chunk=37, bank_chunk=101, **kwargs)
    fold = folds_of(data.names, 3)
    assert torch.equal(folds_of(data.subset(perm.tolist()).names, 3),
                       fold[perm])
    mious = {}
    for t in TEMPERATURES:
        assert len(plain[t]) == len(permuted[t]) == 3
        for a, b in zip(plain[t], permuted[t]):
            assert torch.equal(a.sum(0), b.sum(0))  # the folds' areas
        mious[t] = summarise(plain[t], bootstrap=0)['miou']
        assert summarise(permuted[t], bootstrap=0)['miou'] == pytest.approx(
            mious[t], rel=1e-9)
        assert 0 < mious[t] < 100
    assert mious[0.02] != mious[0.07]


# -- the linear probe and the bank augmentation -------------------------------


def test_linear_probe_trains_only_its_layer(tiny_model, coco64):
    model = tiny_model
    params = {n: (p.detach().clone(), p.requires_grad)
              for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    assert any(rg for _, rg in params.values())
    result = dense_eval(model, coco64.subset(range(12)), blocks=(0, 1),
                        folds=2, k=10, linear=True, linear_epochs=5,
                        bootstrap=10)
    assert set(result) == {'knn_b0_t0.02', 'knn_b0_t0.07', 'linear_b0',
                           'knn_b1_t0.02', 'knn_b1_t0.07', 'linear_b1'}
    for name, p in model.named_parameters():
        value, requires_grad = params[name]
        assert torch.equal(p, value), name
        assert p.grad is None, name
        assert p.requires_grad == requires_grad, name
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert not model.training
    for r in result.values():
        assert 0 < r['miou'] <= 100 and r['low'] <= r['high']


def test_augmented_bank(coco64, tiny_model):
    """Random resized crops of each image and its mask: named as their
    image, so in its fold; masks keep to the image's own classes."""
    data = coco64.subset(range(6))
    bank = augment_bank(data, 3, seed=1)
    assert bank.images.shape == (18, 3, 64, 64)
    assert bank.images.dtype == torch.uint8
    assert bank.masks.shape == (18, 64, 64)
    assert bank.names == tuple(n for n in data.names for _ in range(3))
    assert bank.classes == data.classes
    folds = folds_of(data.names, 5)
    assert torch.equal(folds_of(bank.names, 5), folds.repeat_interleave(3))
    for i in range(18):
        own = set(data.masks[i // 3].unique().tolist())
        assert set(bank.masks[i].unique().tolist()) <= own
        assert own <= set(range(data.num_classes)) | {IGNORE}
    # crops, not copies; and another seed, other crops
    assert not any(torch.equal(bank.images[i], data.images[i // 3])
                   for i in range(18))
    assert not torch.equal(augment_bank(data, 3, seed=2).images, bank.images)

    data = coco64.subset(range(10))
    kwargs = dict(blocks=(1, ), folds=2, k=10, linear=False, bootstrap=10)
    plain = dense_eval(tiny_model, data, **kwargs)
    augmented = dense_eval(tiny_model, data, bank_copies=1, **kwargs)
    assert set(plain) == set(augmented) == {'knn_b1_t0.02', 'knn_b1_t0.07'}
    for key, r in augmented.items():
        assert set(r) == {'miou', 'low', 'high'}
        assert 0 < r['miou'] <= 100
    assert augmented != plain  # the bank changed


# -- the hook, in a short pretraining -----------------------------------------

ITERS, INTERVAL = 3, 2  # the hook logs at 0 (before_train), 2 and 3
DENSE_KEYS = [f'dense/knn_b{b}_t{t:g}' for b in (0, 1) for t in TEMPERATURES]


def small_pretrain_cfg(data_root, work_dir, seg_root=None):
    """The tiny-imagenet MR-BarlowTwins config at the tests' sizes for
    ITERS iterations at batch 8, its KNNHook replaced by a DenseKNNHook on
    the COCO sample's validation images (at the backbone's 64 px), or on
    ``seg_root``."""
    options = {k: v for k, v in TINY_TRAIN_OPTIONS.items()
               if not k.startswith('custom_hooks.')}  # the KNNHook's
    options.update({
        'work_dir': str(work_dir),
        'experiment_name': experiment_name('dense'),
        'train_cfg.max_iters': ITERS,
        'default_hooks.checkpoint.interval': ITERS,
    })
    cfg = tiny_imagenet_cfg(data_root, **options)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNHook']
    cfg.custom_hooks.append(dict(
        type='DenseKNNHook', interval=INTERVAL,
        data_root=str(seg_root or data_root / COCO), splits=['validation'],
        blocks=(0, 1), folds=2, before_train=True))
    return cfg


@pytest.fixture(scope='module')
def dense_pretrain_run(data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('dense_pretrain')
    runner = Runner.from_cfg(small_pretrain_cfg(data_root, work))
    runner.train()
    return runner, work


def test_hook_logs_dense_knn_during_pretraining(dense_pretrain_run):
    runner, work = dense_pretrain_run
    assert runner.iter == ITERS
    records = [json.loads(line) for line in
               (work / runner.timestamp / 'vis_data' / 'scalars.json')
               .read_text().splitlines()]
    logged = {r['step']: r for r in records if DENSE_KEYS[0] in r}
    assert sorted(logged) == [0, 2, 3]  # before, the interval, the last
    for step, record in logged.items():
        for key in DENSE_KEYS:
            assert 0 < record[key] <= 100, (step, key)
    # the figures of one evaluation are not all one number, and the last
    # one is of the trained weights, not those of the first
    assert len({logged[3][key] for key in DENSE_KEYS}) > 1
    assert any(logged[0][key] != logged[3][key] for key in DENSE_KEYS)
    for key in DENSE_KEYS:
        assert runner.message_hub.get_scalar(key).current() == logged[3][key]
    # the training went on in train mode around the evaluations
    assert runner.model.training
    assert any('loss' in r for r in records)


def test_hook_without_masks_stops_before_training(data_root, tmp_path):
    """A folder with images but no annotations/ fails in before_train,
    naming the folder, not after the last iteration."""
    folder = tmp_path / 'no_masks'
    (folder / 'images' / 'validation').mkdir(parents=True)
    images = sorted((data_root / COCO / 'images' / 'validation').iterdir())
    for image in images[:2]:
        shutil.copy(image, folder / 'images' / 'validation')
    cfg = small_pretrain_cfg(data_root, tmp_path / 'work', seg_root=folder)
    runner = Runner.from_cfg(cfg)
    missing = folder / 'annotations' / 'validation'
    with pytest.raises(SegFolderError,
                       match=f'^no masks: {re.escape(str(missing))} does '
                       'not exist'):
        runner.train()
    assert runner.iter == 0


def test_hook_every_evaluates_a_fixed_subset(data_root, tiny_model):
    """``every=n`` keeps every n-th image of the folder in name order, the
    same images at every point; a bad value is refused when built."""
    hook = DenseKNNHook(interval=10, data_root=str(data_root / COCO),
                        splits=['validation'], blocks=(0, 1), every=3)
    hook.prepare(SimpleNamespace(model=tiny_model))
    full = load_seg_folder(str(data_root / COCO), 64, ['validation'])
    assert hook.data.names == full.names[::3]
    assert torch.equal(hook.data.masks, full.masks[::3])
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match='every must be an int >= 1'):
            DenseKNNHook(interval=10, data_root='x', every=bad)


# -- tools/analysis_tools/dense_eval.py ---------------------------------------

CIFAR_VIT = dict(arch=dict(embed_dims=192, num_layers=6, num_heads=3,
                           feedforward_channels=768),
                 img_size=32, patch_size=4)  # the small CIFAR config's
FAST = ['--size', 32, '--folds', 2, '--bootstrap', 20, '--linear-epochs', 5,
        '--splits', 'validation']


@pytest.fixture(scope='module')
def plain_vit(tmp_path_factory):
    """A plain mmpretrain VisionTransformer of the small CIFAR config's
    geometry, saved as {'state_dict': ...}."""
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(1)
    vit = VisionTransformer(**CIFAR_VIT)
    vit.init_weights()
    path = tmp_path_factory.mktemp('plain_vit') / 'vit.pth'
    torch.save({'state_dict': vit.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def converted_encoder(mrcl_checkpoint, tmp_path_factory):
    """The real small CIFAR checkpoint's encoder, converted."""
    path = tmp_path_factory.mktemp('dense_encoder') / 'encoder.pth'
    convert_file(str(mrcl_checkpoint), str(path), 'mmpretrain')
    return path


def dense_tool(data_root, checkpoint, *extra, seg_root=None):
    return run_tool('analysis_tools/dense_eval.py', [
        SMALL_CIFAR_CONFIG, checkpoint, '--data-root',
        seg_root or data_root / COCO, *extra])


@pytest.mark.parametrize('which', ['converted', 'plain'])
def test_tool_prints_knn_and_linear_for_both_models(
        which, request, mrcl_data_env, capsys):
    checkpoint = request.getfixturevalue(
        'converted_encoder' if which == 'converted' else 'plain_vit')
    assert dense_tool(mrcl_data_env, checkpoint, *FAST) == ''
    out = capsys.readouterr().out
    assert (f'dense evaluation on {mrcl_data_env / COCO}: 100 images at 32 '
            'px, 133 classes, 2 folds, k=30') in out
    rows = {}
    number = r'(\d+\.\d\d) \((\d+\.\d\d)-(\d+\.\d\d)\)'
    for line in out.splitlines():
        m = re.fullmatch(rf'\s*(\S+): random init {number}   pretrained '
                         rf'{number}', line)
        if m:
            rows[m[1]] = [float(x) for x in m.groups()[1:]]
    # the middle block and the last of 6
    assert sorted(rows) == sorted([
        'knn_b2_t0.02', 'knn_b2_t0.07', 'linear_b2',
        'knn_b5_t0.02', 'knn_b5_t0.07', 'linear_b5'])
    for key, (init, low, high, trained, t_low, t_high) in rows.items():
        assert 0 < init <= 100 and 0 < trained <= 100, key
        assert low <= high and t_low <= t_high, key
    assert 'random init:' in out and 'pretrained:' in out
    # the pretrained row is the checkpoint's: dense_eval of it, loaded here,
    # with the same settings (deterministic: seeded probe and bootstrap)
    cfg = Config.fromfile(str(SMALL_CIFAR_CONFIG))
    init_default_scope('mmpretrain')
    model = build_model(cfg, str(checkpoint))
    data = load_seg_folder(str(mrcl_data_env / COCO), 32, ['validation'])
    expected = dense_eval(model, data, folds=2, linear_epochs=5,
                          bootstrap=20)
    assert sorted(expected) == sorted(rows)
    for key, r in expected.items():
        assert rows[key][3:] == [float(f'{r[x]:.2f}')
                                 for x in ('miou', 'low', 'high')], key
    assert any(r[0] != r[3] for r in rows.values())  # not the random init


def test_tool_refuses_bad_input_in_one_line(data_root, mrcl_data_env,
                                            plain_vit, tmp_path):
    """Each an `error: ...` line (run_tool asserts it has no newline and
    that the exit is not 0), before any evaluation."""
    real = data_root / COCO
    names = sorted(p.stem for p in (real / 'images' / 'training').iterdir())
    # images without masks
    folder = tmp_path / 'no_masks'
    (folder / 'images' / 'training').mkdir(parents=True)
    for name in names[:3]:
        shutil.copy(real / 'images' / 'training' / f'{name}.jpg',
                    folder / 'images' / 'training')
    error = dense_tool(data_root, plain_vit, '--splits', 'training',
                       seg_root=folder)
    assert error.startswith('error: no masks: '
                            f'{folder / "annotations" / "training"} does '
                            'not exist')
    # a mask of another size than its image
    (folder / 'annotations' / 'training').mkdir(parents=True)
    for name in names[:3]:
        shutil.copy(real / 'annotations' / 'training' / f'{name}.png',
                    folder / 'annotations' / 'training')
    bad = folder / 'annotations' / 'training' / f'{names[1]}.png'
    mask = mmcv.imread(str(bad), flag='unchanged', backend='pillow')
    h, w = mask.shape
    mmcv.imwrite(mmcv.imresize(mask, (w // 2, h // 2),
                               interpolation='nearest'), str(bad))
    error = dense_tool(data_root, plain_vit, '--splits', 'training',
                       seg_root=folder)
    assert error.startswith(f'error: {bad} is {h // 2}x{w // 2}, its image '
                            f'{folder / "images" / "training" / names[1]}'
                            f'.jpg {h}x{w}: a mask must have its image')
    # not an encoder
    head = tmp_path / 'head.pth'
    torch.save({'state_dict': {'head.fc.weight': torch.zeros(2, 2)}}, head)
    error = dense_tool(data_root, head, *FAST)
    assert error.startswith(f'error: {head}: neither a model checkpoint (no '
                            'backbone.* keys) nor an encoder-only one')
    # no such folder
    error = dense_tool(data_root, plain_vit, *FAST,
                       seg_root=tmp_path / 'nowhere')
    assert error.startswith('error: no images: '
                            f'{tmp_path / "nowhere" / "images"}')


@pytest.mark.parametrize('option, message', [
    (['--size', 30], 'error: the evaluation size 30 is not a multiple of the '
     'patch size 4'),
    (['--blocks', 6], 'error: blocks [6]: the backbone has blocks 0 to 5'),
    (['-k', 5000], 'error: k=5000 is more than the'),
])
def test_tool_refuses_a_size_block_or_k_that_does_not_fit(
        option, message, data_root, mrcl_data_env, plain_vit):
    """Arguments that do not fit the model or the folder: one line, before
    the first evaluation finishes."""
    fast = list(FAST)
    if option[0] == '--size':
        fast[:2] = option
        option = []
    assert dense_tool(data_root, plain_vit, *fast, *option).startswith(
        message)
