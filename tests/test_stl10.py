"""STL-10 read from its release's binary files: pixels and labels round-trip,
and a missing or cut file is refused by name (by the dataset and by the
pre-flight of tools/train.py, before anything is written)."""
import numpy as np
import pytest

from mrcl_plugin.datasets import STL10, STL10FileError
from mrcl_testing import write_stl10


@pytest.fixture(scope='module')
def stl10(tmp_path_factory):
    root = tmp_path_factory.mktemp('stl10')
    return root, write_stl10(root, train=8, unlabeled=6, test=4)


@pytest.mark.parametrize('split', ['train', 'test', 'unlabeled'])
def test_pixels_and_labels_round_trip(stl10, split):
    root, written = stl10
    bgr, labels = written[split]
    dataset = STL10(data_root=str(root), split=split)
    assert len(dataset) == len(bgr)
    for i in range(len(bgr)):
        info = dataset.get_data_info(i)
        assert info['img'].shape == (96, 96, 3)
        assert info['img'].dtype == np.uint8
        # BGR, as LoadImageFromFile gives the image
        np.testing.assert_array_equal(info['img'], bgr[i])
        expected = -1 if split == 'unlabeled' else labels[i]
        assert info['gt_label'] == expected


def test_the_images_are_not_transposed_or_channel_swapped(stl10):
    """The test images are not symmetric: a reader that mixed up rows and
    columns, or RGB and BGR, would not round-trip (checked, not assumed)."""
    _, written = stl10
    bgr = written['train'][0]
    assert not np.array_equal(bgr, bgr.transpose(0, 2, 1, 3))
    assert not np.array_equal(bgr, bgr[..., ::-1])


def test_train_plus_unlabeled_is_the_pretraining_set(stl10):
    root, written = stl10
    dataset = STL10(data_root=str(root), split='train+unlabeled')
    assert len(dataset) == 8 + 6
    np.testing.assert_array_equal(dataset.get_data_info(8)['img'],
                                  written['unlabeled'][0][0])
    assert [dataset.get_data_info(i)['gt_label'] for i in (7, 8)] == [
        written['train'][1][7], -1]


def test_the_pipeline_gets_the_image(stl10):
    """Built outside a Runner, as a script would: in mmpretrain's scope
    (another test may have left mmseg's as the default)."""
    from mmengine.registry import DefaultScope
    root, written = stl10
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = STL10(data_root=str(root), split='test',
                        pipeline=[dict(type='PackInputs')])
    sample = dataset[1]
    img = sample['inputs'].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(img, written['test'][0][1])
    assert sample['data_samples'].gt_label.item() == written['test'][1][1]


def test_bad_files_are_named(tmp_path):
    write_stl10(tmp_path, train=4, unlabeled=2, test=2)
    folder = tmp_path / 'stl10_binary'
    images = folder / 'unlabeled_X.bin'
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(STL10FileError) as error:
        STL10(data_root=str(tmp_path), split='train+unlabeled', lazy_init=True)
    assert str(error.value) == (
        f'STL-10 file {images}: {2 * 27648 - 100} bytes is not a whole '
        'number of 96x96x3 images (27648 bytes each); truncated?')

    labels = folder / 'train_y.bin'
    labels.write_bytes(labels.read_bytes()[:3])
    with pytest.raises(STL10FileError, match='train_y.bin: 3 labels for '
                       'the 4 images of .*train_X.bin'):
        STL10(data_root=str(tmp_path), split='train')

    (folder / 'test_X.bin').unlink()
    with pytest.raises(STL10FileError) as error:
        STL10(data_root=str(tmp_path), split='test')
    assert str(error.value) == (
        f'STL-10 file {folder}/test_X.bin does not exist')
    with pytest.raises(STL10FileError, match="split 'val': must be one of"):
        STL10(data_root=str(tmp_path), split='val')
