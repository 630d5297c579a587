"""Bad input to tools/train.py gives one clear ``error:`` line that names the
problem, and writes nothing, or just works where it should (grayscale, RGBA
and small images). tools/train.py runs in this process (``runpy``, as
``python tools/train.py`` would), on the small CIFAR-10 config shrunk to the
test sizes, on small real-image folders made from the sample data. The same
for tools/test.py's data folder and checkpoint."""
import pickle
import shutil
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mrcl_plugin.checkpoints import CheckpointError, load_checkpoint_file
from mrcl_plugin.preflight import check_options, mrcl_data_hint
from mrcl_testing import (CIFAR, DATA, ROOT, SMALL_CIFAR, logged_iterations,
                          run_tool, train_command, train_env)

TRAIN_IMAGES = CIFAR / 'train'


def train(work_dir, *args, config=None, **options) -> str:
    """Run tools/train.py here; its ``error:`` line, or '' if it trained."""
    argv = train_command(work_dir, *args, **options)[2:]
    if config is not None:
        argv[0] = str(config)
    return run_tool('train.py', argv)


def image_folder(root, images: dict):
    """A class-folder dataset: {'class/name.ext': HxW(xC) uint8 array}."""
    for name, img in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        mmcv.imwrite(img, str(root / name))
    return root


def cifar(i, cls='airplane'):
    return mmcv.imread(str(TRAIN_IMAGES / cls / f'{i:04d}.jpg'))


def folder_options(root, batch_size=4, **kw):
    return {
        'train_dataloader.dataset.data_root': str(root),
        'train_dataloader.dataset.data_prefix': '',
        'train_dataloader.dataset.ann_file': '',
        'train_dataloader.batch_size': batch_size,
        'train_cfg.max_iters': 1,
        'default_hooks.checkpoint.interval': 1,
        # a folder of images has no labelled splits: kNN on the CIFAR sample
        'custom_hooks.2.data_root': str(CIFAR),
        **kw
    }


def assert_nothing_written(work_dir):
    assert not list(work_dir.rglob('*.pth')), list(work_dir.rglob('*'))
    assert not list(work_dir.glob('2*')), 'a run folder was started'


@pytest.fixture(scope='module')
def four_images(tmp_path_factory):
    return image_folder(
        tmp_path_factory.mktemp('data'),
        {f'{c}/{i}.jpg': cifar(i, c)
         for c in ('cat', 'dog') for i in range(2)})


@pytest.fixture(autouse=True)
def _data_env(mrcl_data_env):
    pass


# -- the config -------------------------------------------------------------


def test_missing_config(tmp_path):
    assert train(tmp_path, config=tmp_path / 'nope.py') == \
        f'config file not found: {tmp_path}/nope.py'


def test_unknown_type(tmp_path):
    message = train(tmp_path, **{'model.type': 'MRCLL'})
    assert message.startswith('error: the config does not build: MRCLL is '
                              'not in the mmpretrain::model registry')


def test_misspelt_argument(tmp_path):
    """The model refuses it when the Runner builds it: the error names the
    option, and the run folder the Runner had started is gone."""
    message = train(tmp_path, **{'model.backbone.mask_ratoi': 0.3})
    assert message == (
        "error: --cfg-options model.backbone.mask_ratoi: MRCLViT takes no "
        "argument 'mask_ratoi' (misspelt? model.backbone has: arch, "
        "img_size, mask_generator, mask_ratio, patch_size, type)")
    assert_nothing_written(tmp_path)


def test_misspelt_nested_key_of_a_loop(tmp_path):
    """mmengine builds the loop in ``Runner.train``, after the run folder
    and the model: it used to end in a 27-line TypeError there. The loop's
    class is certain, so the pre-flight refuses it before anything."""
    message = train(tmp_path, **{'train_cfg.max_iter': 2})
    assert message == (
        "error: --cfg-options train_cfg.max_iter: IterBasedTrainLoop takes "
        "no argument 'max_iter' (misspelt? train_cfg has: max_iters, type)")
    assert list(tmp_path.iterdir()) == []


def test_misspelt_nested_key_built_in_train(tmp_path):
    """The optimizer is built in ``Runner.train`` as well, from a class the
    pre-flight does not resolve: the build names it, the run folder goes,
    and an earlier run's copy of the config is kept."""
    copy = tmp_path / SMALL_CIFAR.split('/')[-1]
    tmp_path.mkdir(exist_ok=True)
    copy.write_text('# an earlier run\n')
    message = train(tmp_path, **{'optim_wrapper.optimizer.betass': 0.9})
    assert message == (
        "error: --cfg-options optim_wrapper.optimizer.betass: AdamW takes no "
        "argument 'betass' (misspelt? optim_wrapper.optimizer has: betas, "
        "lr, type, weight_decay)")
    assert_nothing_written(tmp_path)
    assert copy.read_text() == '# an earlier run\n'


def test_added_nested_keys_that_are_meant_pass():
    """A nested key the config does not have is often meant: the pre-flight
    returns those it lets through for the build to judge."""
    cfg = Config.fromfile(str(ROOT / SMALL_CIFAR))
    meant = {
        'model.backbone.init_cfg.type': 'Pretrained',
        'model.backbone.init_cfg.checkpoint': 'encoder.pth',
        'train_dataloader.dataset.indices': 64,
        'custom_hooks.2.priority': 'LOW',
        'train_cfg.val_begin': 2,
    }
    added = check_options(cfg, meant)
    assert {k: (v.where, v.part) for k, v in added.items()} == {
        'model.backbone.init_cfg.type': ('model.backbone', 'init_cfg'),
        'model.backbone.init_cfg.checkpoint': ('model.backbone', 'init_cfg'),
        'train_dataloader.dataset.indices': ('train_dataloader.dataset',
                                             'indices'),
        'custom_hooks.2.priority': ('custom_hooks.2', 'priority'),
        'train_cfg.val_begin': ('train_cfg', 'val_begin'),
    }


def test_misspelt_top_level_key(tmp_path):
    """mmengine would add it, unused, and train with batch 64."""
    message = train(tmp_path, **{'train_dataloder.batch_size': 8})
    assert message.startswith(
        "error: --cfg-options train_dataloder.batch_size: the config has no "
        "key 'train_dataloder' (misspelt?")
    assert_nothing_written(tmp_path)


def test_compile_is_an_option_of_the_runner(tmp_path):
    """``compile`` is no argument of Runner (``Runner.train`` reads it from
    the config): the pre-flight knows it, checks its value and still
    refuses a misspelt key."""
    cfg = Config.fromfile(str(ROOT / SMALL_CIFAR))
    assert 'compile' not in cfg
    check_options(cfg, {'compile': True, 'launcher': 'none',
                        'visualizer.type': 'Visualizer'})
    assert train(tmp_path / 'off', **{'compile': False,
                                      'train_cfg.max_iters': 1}) == ''
    dumped = Config.fromfile(
        str(next((tmp_path / 'off').glob('*/vis_data/config.py'))))
    assert dumped.compile is False
    assert logged_iterations(tmp_path / 'off')[1]['loss'] > 0
    assert train(tmp_path / 'typo', **{'compile': 'Ture'}) == (
        "error: compile = 'Ture': must be True, False or a dict of "
        "torch.compile's options")
    assert train(tmp_path / 'misspelt', **{'compil': True}).startswith(
        "error: --cfg-options compil: the config has no key 'compil' "
        '(misspelt?')
    assert_nothing_written(tmp_path / 'typo')


@pytest.mark.parametrize('key, value, message', [
    ('model.backbone.mask_ratio', 1.5,
     'MRCLViT: mask_ratio must be in [0, 1), got 1.5'),
    ('model.rec_head.alpha', -1,
     'MRCLReconstructionHead: alpha must be >= 0, got -1'),
    ('model.contrastive_weight', -0.5,
     'MRBarlowTwins: contrastive_weight must be >= 0, got -0.5'),
    ('optim_wrapper.optimizer.lr', -0.001,
     'error: optim_wrapper.optimizer.lr = -0.001: must be > 0'),
    ('train_cfg.max_iters', 0,
     'error: train_cfg.max_iters = 0: must be an integer >= 1'),
    ('train_dataloader.batch_size', 0,
     'error: train_dataloader.batch_size = 0: must be an integer >= 1'),
])
def test_out_of_range_hyper_parameters(tmp_path, key, value, message):
    got = train(tmp_path, **{key: value})
    assert message in got, got
    # The model's own checks run when the Runner builds it, which had made
    # its log folder: a refused build removes it.
    assert_nothing_written(tmp_path)


# -- the work_dir -----------------------------------------------------------


def test_work_dir_not_writable(tmp_path):
    """Under a file (chmod does not stop root, who runs the tests)."""
    (tmp_path / 'file').write_text('')
    work = tmp_path / 'file' / 'work'
    assert train(work) == (f'error: work_dir {work} is not writable: '
                           'Not a directory')


# -- the data ---------------------------------------------------------------


def test_missing_data_folder(tmp_path):
    """A data_root given on the command line: no MRCL_DATA hint."""
    missing = tmp_path / 'no_data'
    assert train(tmp_path / 'w', **folder_options(missing)) == (
        f'error: train_dataloader.dataset: data folder {missing}/ does not '
        'exist (data_root + data_prefix)')


def test_missing_data_folder_under_mrcl_data(tmp_path, monkeypatch):
    """The small config reads ``$MRCL_DATA``: the hint, with its value."""
    monkeypatch.setenv('MRCL_DATA', str(tmp_path / 'nowhere'))
    assert train(tmp_path / 'w') == (
        f'error: train_dataloader.dataset: data folder {tmp_path}/nowhere/'
        'cls/cifar10/train does not exist (data_root + data_prefix; set '
        f'MRCL_DATA? the config reads it, now {tmp_path}/nowhere)')
    monkeypatch.delenv('MRCL_DATA')
    cfg = Config.fromfile(str(ROOT / SMALL_CIFAR))
    assert mrcl_data_hint(cfg, '../shared/data/cls/cifar10/train') == (
        'set MRCL_DATA? the config reads it, unset here')


def test_empty_data_folder(tmp_path):
    (tmp_path / 'data').mkdir()
    assert train(tmp_path / 'w', **folder_options(tmp_path / 'data')) == (
        f'error: train_dataloader.dataset: {tmp_path}/data/ has no images '
        f'(.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)')


def test_class_folder_without_images(tmp_path, four_images):
    data = tmp_path / 'data'
    shutil.copytree(four_images, data)
    (data / 'empty_class').mkdir()
    (data / 'empty_class' / 'notes.txt').write_text('no images here')
    assert train(tmp_path / 'w', **folder_options(data)) == (
        f'error: train_dataloader.dataset: {data}/empty_class has no images '
        '(.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)')


def test_annotation_lists_a_missing_file(tmp_path, four_images):
    data = tmp_path / 'data'
    shutil.copytree(four_images, data)
    (data / 'train.txt').write_text('cat/0.jpg 0\ncat/1.jpg 0\ncat/7.jpg 0\n')
    message = train(tmp_path / 'w', **folder_options(
        data, **{'train_dataloader.dataset.ann_file': 'train.txt'}))
    assert message == (f'error: {data}/train.txt line 3: cat/7.jpg is not '
                       f'in {data}/')


def test_missing_annotation_file(tmp_path, four_images):
    message = train(tmp_path / 'w', **folder_options(
        four_images, **{'train_dataloader.dataset.ann_file': 'meta/x.txt'}))
    assert message == (f'error: train_dataloader.dataset.ann_file '
                       f'{four_images}/meta/x.txt does not exist')


def test_batch_larger_than_dataset(tmp_path, four_images):
    assert train(tmp_path / 'w', **folder_options(four_images, 8)) == (
        'error: train_dataloader.batch_size = 8 is larger than the dataset '
        f'(4 images in {four_images}/)')


@pytest.mark.parametrize('damage', ['corrupt', 'truncated'])
def test_broken_image(tmp_path, four_images, damage):
    """Garbage bytes, or a JPEG cut after its header: mmcv's loader names
    the file (through a data worker too); the tool prints that line."""
    data = tmp_path / 'data'
    shutil.copytree(four_images, data)
    bad = data / 'dog' / '1.jpg'
    if damage == 'corrupt':
        bad.write_bytes(b'this is not an image' * 10)
    else:
        bad.write_bytes(bad.read_bytes()[:100])
    message = train(tmp_path / 'w', **folder_options(
        data, **{'train_dataloader.num_workers': 1}))
    assert message == f'error: AssertionError: failed to load image: {bad}'
    assert not list((tmp_path / 'w').rglob('*.pth'))


def test_grayscale_rgba_and_small_images_just_work(tmp_path):
    """A grayscale JPEG, an RGBA PNG and 16 px images (under the 32 px
    crop) train: LoadImageFromFile reads every image as 3-channel colour,
    RandomResizedCrop scales any size to 32 px."""
    gray = mmcv.bgr2gray(cifar(0))
    rgba = np.dstack([cifar(1), np.full((32, 32), 128, np.uint8)])
    small = mmcv.imresize(cifar(2), (16, 16))
    data = image_folder(tmp_path / 'data', {
        'a/gray.jpg': gray, 'a/rgba.png': rgba, 'b/small.jpg': small,
        'b/small2.png': mmcv.imresize(cifar(3), (16, 16))})
    assert mmcv.imread(str(data / 'a/rgba.png'), 'unchanged').shape[2] == 4
    assert train(tmp_path / 'w', **folder_options(data)) == ''
    ckpt = load_checkpoint_file(tmp_path / 'w' / 'iter_1.pth')
    assert ckpt['meta']['iter'] == 1
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())


# -- checkpoints --------------------------------------------------------------


@pytest.fixture(scope='module')
def classifier_ckpt(tmp_path_factory):
    """An mmengine-style checkpoint of another model (a ResNet classifier)."""
    from mmpretrain.models import ResNet
    path = tmp_path_factory.mktemp('other') / 'resnet.pth'
    torch.save(
        dict(
            meta=dict(iter=10, cfg="model = dict(type='ImageClassifier', "
                      "backbone=dict(type='ResNet', depth=18))"),
            state_dict={f'backbone.{k}': v
                        for k, v in ResNet(18).state_dict().items()},
            optimizer=dict(state={}, param_groups=[])), path)
    return path


@pytest.mark.parametrize('how', ['--resume', 'load_from'])
def test_checkpoint_of_another_model(tmp_path, classifier_ckpt, how):
    if how == '--resume':
        message = train(tmp_path, '--resume', classifier_ckpt)
        key = 'resume'
    else:
        message = train(tmp_path, **{'load_from': classifier_ckpt})
        key = 'load_from'
    assert message == (f'error: {key} {classifier_ckpt}: a checkpoint of '
                       'another model (ImageClassifier), this config trains '
                       'MRBarlowTwins')
    assert_nothing_written(tmp_path)


def test_truncated_checkpoint(tmp_path, classifier_ckpt):
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(classifier_ckpt.read_bytes()[:5000])
    message = train(tmp_path / 'w', '--resume', cut)
    assert message.startswith(f'error: {cut}: truncated or corrupt '
                              'checkpoint (')


class Trap:
    """Unpickling it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickle_that_is_not_a_checkpoint_is_not_run(tmp_path):
    marker = tmp_path / 'it_ran'
    for name, save in (('torch_save.pth', torch.save),
                       ('plain.pkl', lambda obj, p: p.write_bytes(
                           pickle.dumps(obj)))):
        save({'state_dict': {}, 'x': Trap(marker)}, tmp_path / name)
        message = train(tmp_path / 'w', '--resume', tmp_path / name)
        assert message.startswith(f'error: {tmp_path / name}: ')
        assert 'nothing in it was run' in message
        assert not marker.exists()
    assert 'refused: it pickles io.open, which no checkpoint holds' in \
        train(tmp_path / 'w', '--resume', tmp_path / 'torch_save.pth')


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    """Bytes that look like a pickle made torch's unpickler raise IndexError,
    KeyError or UnicodeDecodeError; every one is now a CheckpointError."""
    rng = np.random.default_rng(0)
    path = tmp_path / 'noise.pth'
    for _ in range(200):
        path.write_bytes(rng.bytes(512))
        with pytest.raises(CheckpointError, match='not a torch checkpoint'):
            load_checkpoint_file(path)


def test_resume_with_no_checkpoint(tmp_path):
    assert train(tmp_path, '--resume') == (
        f'error: --resume: no checkpoint in work_dir {tmp_path} (no '
        'last_checkpoint, iter_N.pth or epoch_N.pth); give one with '
        '--resume PATH')
    assert_nothing_written(tmp_path)


def test_resume_with_missing_path(tmp_path):
    assert train(tmp_path, '--resume', tmp_path / 'iter_9.pth') == \
        f'--resume checkpoint not found: {tmp_path}/iter_9.pth'


def test_amp_trains_under_bf16_autocast_on_a_cpu(tmp_path):
    """mmengine's AmpOptimWrapper asserts a GPU; without one --amp selects
    CPUBF16OptimWrapper, and trains."""
    assert train(tmp_path, '--amp', **{'train_cfg.max_iters': 1}) == ''
    dumped = Config.fromfile(str(next(tmp_path.glob('*/vis_data/config.py'))))
    assert dumped.optim_wrapper.type == (
        'AmpOptimWrapper'
        if torch.cuda.is_available() else 'CPUBF16OptimWrapper')
    assert logged_iterations(tmp_path)[1]['loss'] > 0


def test_a_real_subprocess_prints_one_error_line(tmp_path):
    """The same through ``python tools/train.py``: exit status 1, the error
    as the last line of stderr, no traceback."""
    out = subprocess.run(
        train_command(tmp_path, **{'train_cfg.max_iters': 0}), cwd=ROOT,
        env=train_env(), capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == \
        'error: train_cfg.max_iters = 0: must be an integer >= 1'
    assert 'Traceback' not in out.stderr


# -- the ImageNet configs' split= form, STL-10, wrapped and unknown ---------

IN1K = ROOT / (
    'configs/mrcl/mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py')
STL10_CONFIG = ROOT / (
    'configs/mrcl/mrcl-barlowtwins_vit-base-p16_8xb64-coslr-300e_stl10.py')


def preflight(config, work_dir, **options) -> str:
    """tools/train.py on a shipped config with only data options: the
    pre-flight's error line (the model is never built)."""
    message = run_tool('train.py', [
        config, '--work-dir', work_dir, '--cfg-options',
        *(f'{k}={v}' for k, v in options.items())
    ])
    assert message, 'the pre-flight let it through'
    return message


@pytest.fixture
def imagenet_layout(tmp_path):
    """mmpretrain's ImageNet layout from 4 real Tiny-ImageNet images:
    train/<wnid>/*.JPEG and meta/train.txt."""
    src = DATA / 'cls' / 'tiny_imagenet_10cls' / 'train'
    root = tmp_path / 'imagenet'
    lines = []
    for label, wnid in enumerate(sorted(p.name for p in src.iterdir())[:2]):
        (root / 'train' / wnid).mkdir(parents=True)
        for name in sorted(p.name for p in (src / wnid).iterdir())[:2]:
            shutil.copy(src / wnid / name, root / 'train' / wnid / name)
            lines.append(f'{wnid}/{name} {label}')
    (root / 'meta').mkdir()
    (root / 'meta' / 'train.txt').write_text('\n'.join(lines) + '\n')
    return root


def test_split_form_missing_root(tmp_path):
    root = tmp_path / 'no_imagenet'
    assert preflight(IN1K, tmp_path / 'w', **{
        'train_dataloader.dataset.data_root': root
    }) == (f'error: train_dataloader.dataset: data folder {root}/train does '
           'not exist (data_root + data_prefix)')


def test_split_form_annotation_names_a_missing_file(tmp_path,
                                                    imagenet_layout):
    ann = imagenet_layout / 'meta' / 'train.txt'
    ann.write_text(ann.read_text() + 'n01443537/missing.JPEG 0\n')
    assert preflight(IN1K, tmp_path / 'w', **{
        'train_dataloader.dataset.data_root': imagenet_layout
    }) == (f'error: {ann} line 5: n01443537/missing.JPEG is not in '
           f'{imagenet_layout}/train')


def test_split_form_batch_larger_than_dataset(tmp_path, imagenet_layout):
    assert preflight(IN1K, tmp_path / 'w', **{
        'train_dataloader.dataset.data_root': imagenet_layout,
        'train_dataloader.batch_size': 8
    }) == ('error: train_dataloader.batch_size = 8 is larger than the '
           f'dataset (4 images in {imagenet_layout}/train)')


def test_split_form_without_annotation_reads_class_folders(
        tmp_path, imagenet_layout):
    """No meta/train.txt: ImageNet scans train/; an empty class folder is
    named, and an empty train/ too."""
    (imagenet_layout / 'meta' / 'train.txt').unlink()
    (imagenet_layout / 'train' / 'n99999999').mkdir()
    options = {'train_dataloader.dataset.data_root': imagenet_layout}
    assert preflight(IN1K, tmp_path / 'w', **options) == (
        f'error: train_dataloader.dataset: {imagenet_layout}/train/n99999999 '
        'has no images (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, '
        '.webp)')
    shutil.rmtree(imagenet_layout / 'train')
    (imagenet_layout / 'train').mkdir()
    assert preflight(IN1K, tmp_path / 'w', **options) == (
        f'error: train_dataloader.dataset: {imagenet_layout}/train has no '
        'images (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)')
    assert_nothing_written(tmp_path / 'w')


def test_stl10_cut_file_is_named_before_anything_is_written(tmp_path):
    from mrcl_testing import write_stl10
    write_stl10(tmp_path / 'stl10', train=4, unlabeled=4, test=2)
    images = tmp_path / 'stl10' / 'stl10_binary' / 'unlabeled_X.bin'
    images.write_bytes(images.read_bytes()[:-1])
    assert preflight(STL10_CONFIG, tmp_path / 'w', **{
        'train_dataloader.dataset.data_root': tmp_path / 'stl10'
    }) == (f'error: train_dataloader.dataset: STL-10 file {images}: '
           f'{4 * 27648 - 1} bytes is not a whole number of 96x96x3 images '
           '(27648 bytes each); truncated?')
    assert_nothing_written(tmp_path / 'w')


def _imagenet_cfg(root, batch_size=8, **dataset):
    cfg = Config.fromfile(str(IN1K))
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.dataset.data_root = str(root)
    cfg.train_dataloader.dataset.update(dataset)
    return cfg


def test_wrapped_and_label_free_datasets(imagenet_layout):
    from mrcl_plugin.preflight import ConfigError, check_dataset
    inner = _imagenet_cfg(imagenet_layout).train_dataloader.dataset
    # RepeatDataset: 2 x 4 images hold a batch of 8; ConcatDataset: 4 + 4
    for wrapped in (dict(type='RepeatDataset', times=2, dataset=inner),
                    dict(type='ConcatDataset', datasets=[inner, inner])):
        cfg = _imagenet_cfg(imagenet_layout)
        cfg.train_dataloader.dataset = wrapped
        check_dataset(cfg)
        cfg.train_dataloader.batch_size = 9
        with pytest.raises(ConfigError, match='batch_size = 9 is larger '
                           r'than the dataset \(8 images in'):
            check_dataset(cfg)
    # a missing file inside the wrapper is still found
    ann = imagenet_layout / 'meta' / 'train.txt'
    ann.write_text(ann.read_text() + 'n01443537/gone.JPEG 0\n')
    cfg = _imagenet_cfg(imagenet_layout)
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=inner)
    with pytest.raises(ConfigError, match='line 5: n01443537/gone.JPEG'):
        check_dataset(cfg)
    # with_label=False reads every image under the folder, no classes
    ann.unlink()
    cfg = _imagenet_cfg(imagenet_layout, batch_size=4)
    cfg.train_dataloader.dataset = dict(
        type='CustomDataset', data_root=str(imagenet_layout),
        data_prefix='train', with_label=False)
    check_dataset(cfg)
    cfg.train_dataloader.batch_size = 5
    with pytest.raises(ConfigError, match=r'\(4 images in .*/train\)'):
        check_dataset(cfg)


def test_unknown_dataset_types_are_not_refused(tmp_path):
    """A type the pre-flight cannot know (another codebase's, or one a user
    registers) is left to its own loader."""
    from mmpretrain.registry import DATASETS
    from mrcl_plugin.preflight import check_dataset

    from mmengine.dataset import BaseDataset

    @DATASETS.register_module(force=True)
    class SomeonesDataset(BaseDataset):
        pass

    for type_ in ('SomeonesDataset', 'NotRegisteredAnywhere'):
        check_dataset(_imagenet_cfg(tmp_path / 'nothing', type=type_))


# -- tools/test.py --------------------------------------------------------

LINEAR = ('configs/benchmarks/mmpretrain/'
          'vit-base-p16_8xb128-linear-coslr-100e_in1k.py')


def evaluate(work_dir, checkpoint, config=LINEAR, **options) -> str:
    """Run tools/test.py here (on the linear-probe config); its ``error:``
    line, or '' if it tested."""
    argv = [config, checkpoint, '--work-dir', work_dir]
    if options:
        argv += ['--cfg-options', *(f'{k}={v}' for k, v in options.items())]
    return run_tool('test.py', argv)


def test_evaluate_missing_data_folder(tmp_path, classifier_ckpt):
    """The config's ImageNet dataset reads data_root/<split>."""
    missing = tmp_path / 'no_data'
    assert evaluate(tmp_path / 'w', classifier_ckpt, **{
        'test_dataloader.dataset.data_root': missing}) == (
        f'error: test_dataloader.dataset: data folder {missing}/val does not '
        'exist (data_root + data_prefix)')


def test_evaluate_needs_a_classifier_checkpoint_and_config(tmp_path):
    """A pretraining checkpoint or config where a benchmark's belongs."""
    mrcl = tmp_path / 'mrcl.pth'
    torch.save(dict(meta=dict(cfg="model = dict(type='MRBarlowTwins')"),
                    state_dict={}), mrcl)
    assert evaluate(tmp_path / 'w', mrcl) == (
        f'error: load_from {mrcl}: a checkpoint of another model '
        '(MRBarlowTwins), this config tests ImageClassifier')
    assert evaluate(tmp_path / 'w', mrcl, config=SMALL_CIFAR) == (
        f'error: {SMALL_CIFAR} has no test_dataloader (test a benchmark '
        'config, not a pretraining one)')


def test_evaluate_refuses_a_pickle_and_random_bytes(tmp_path):
    marker = tmp_path / 'it_ran'
    crafted = tmp_path / 'crafted.pth'
    torch.save({'state_dict': {}, 'x': Trap(marker)}, crafted)
    assert evaluate(tmp_path / 'w', crafted) == (
        f'error: {crafted}: refused: it pickles io.open, which no checkpoint '
        'holds (nothing in it was run)')
    assert not marker.exists()
    noise = tmp_path / 'noise.pth'
    noise.write_bytes(np.random.default_rng(0).bytes(512))
    assert evaluate(tmp_path / 'w', noise).startswith(
        f'error: {noise}: not a torch checkpoint: cannot be read as data (')
    # The same through ``python tools/test.py``: no traceback, status 1.
    out = subprocess.run(
        [sys.executable, 'tools/test.py', LINEAR, str(crafted)], cwd=ROOT,
        env=train_env(), capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(
        f'error: {crafted}: refused: it pickles io.open')
    assert 'Traceback' not in out.stderr
    assert not marker.exists()
