"""The installed stack: versions and imports, and mmcv's compiled ops run on
the CPU with answers worked out by hand."""
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pins():
    """name==version lines of requirements/{torch,openmmlab,tests}.txt, and
    mmcv's version from tools/setup.sh (it builds mmcv from source)."""
    pins = {}
    for name in ('torch', 'openmmlab', 'tests'):
        for line in (REPO_ROOT / 'requirements' / f'{name}.txt').open():
            line = line.split('#')[0].strip()
            if '==' in line:
                dist, version = line.split('==')
                pins[dist.strip()] = version.strip()
    setup = (REPO_ROOT / 'tools' / 'setup.sh').read_text()
    pins['mmcv'] = re.search(r'^MMCV_VERSION=(\S+)$', setup, re.M).group(1)
    return pins


PINS = _pins()


def test_pins_cover_the_stack():
    assert {'torch', 'torchvision', 'mmcv', 'mmengine', 'mmpretrain',
            'mmsegmentation', 'mmdet', 'numpy', 'openmim'} <= set(PINS)


@pytest.mark.parametrize('dist', sorted(PINS))
def test_installed_versions_match_pins(dist):
    # torch/torchvision carry a local build tag (+cu130).
    assert metadata.version(dist).split('+')[0] == PINS[dist]


def test_stack_imports():
    import mim  # noqa: F401
    import mmcv.ops  # noqa: F401
    import mmdet.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401  (imports ftfy and regex)

    import mrcl_plugin
    from mmpretrain.registry import MODELS
    assert MODELS.get('MRBarlowTwins') is not None
    assert MODELS.get('MRCLViT') is not None
    assert mrcl_plugin.compat._APPLIED


def test_mmcv_compiled_ops_are_loaded():
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])
    assert hasattr(ext, 'nms') and hasattr(ext, 'roi_align_forward')


def _iou(a, b):
    """IoU of two x1y1x2y2 boxes, mmcv's convention (offset 0)."""
    w = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


BOXES = [
    [0., 0., 10., 10.],     # 0: 0.90
    [1., 1., 11., 11.],     # 1: 0.80, IoU with 3 = 85.5 / 119.5 = 0.7155
    [20., 20., 30., 30.],   # 2: 0.70, disjoint from 0, 1, 3
    [0., 0., 10., 10.5],    # 3: 0.95, the best; IoU with 0 = 100 / 105
    [21., 21., 29., 29.],   # 4: 0.60, inside 2: IoU 64 / 100
]
SCORES = [0.9, 0.8, 0.7, 0.95, 0.6]


def test_hand_computed_ious():
    assert _iou(BOXES[3], BOXES[0]) == pytest.approx(100 / 105)
    assert _iou(BOXES[3], BOXES[1]) == pytest.approx(85.5 / 119.5)
    assert _iou(BOXES[2], BOXES[4]) == pytest.approx(0.64)
    assert _iou(BOXES[3], BOXES[2]) == 0.


@pytest.mark.parametrize('thr,keep', [
    (0.5, [3, 2]),          # 0, 1 overlap 3; 4 overlaps 2 at 0.64
    (0.7, [3, 2, 4]),       # 4 survives (0.64 < 0.7), 1 does not (0.7155)
    (0.72, [3, 1, 2, 4]),   # now only 0 (0.952) is suppressed by 3
    (0.99, [3, 0, 1, 2, 4]),
])
def test_mmcv_nms_known_answer(thr, keep):
    from mmcv.ops import nms
    boxes = torch.tensor(BOXES)
    scores = torch.tensor(SCORES)
    dets, inds = nms(boxes, scores, iou_threshold=thr)
    assert inds.tolist() == keep
    assert dets.shape == (len(keep), 5)
    torch.testing.assert_close(dets[:, :4], boxes[keep])
    torch.testing.assert_close(dets[:, 4], scores[keep])


def _ramp(h=8, w=8):
    """f(x, y) = x + 10 y at pixel (row y, column x): bilinear interpolation
    is exact on it, so every RoIAlign bin is f at the mean of its sample
    points."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32),
        torch.arange(w, dtype=torch.float32),
        indexing='ij')
    return (xs + 10 * ys)[None, None]


def test_mmcv_roi_align_known_answer():
    from mmcv.ops import RoIAlign
    feat = torch.cat([_ramp(), 2 * _ramp()], dim=1)  # (1, 2, 8, 8)
    rois = torch.tensor([[0., 1., 1., 5., 5.]])
    # aligned=True: the box shifts by -0.5 px to [0.5, 4.5]^2; 2x2 bins of
    # 2 px, 2x2 samples each at +0.5 and +1.5 px: bin centres x, y in
    # {1.5, 3.5} -> f = x + 10 y.
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=2,
                   aligned=True)(feat, rois)
    expected = torch.tensor([[16.5, 18.5], [36.5, 38.5]])
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], 2 * expected)
    # aligned=False: no shift, bin centres in {2, 4}.
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=2,
                   aligned=False)(feat, rois)
    torch.testing.assert_close(out[0, 0],
                               torch.tensor([[22., 24.], [42., 44.]]))
    # spatial_scale=0.5: a box given in 2x coordinates lands on the same
    # feature-map region.
    out = RoIAlign((2, 2), spatial_scale=0.5, sampling_ratio=2,
                   aligned=False)(feat, rois * torch.tensor([1, 2, 2, 2, 2]))
    torch.testing.assert_close(out[0, 0],
                               torch.tensor([[22., 24.], [42., 44.]]))


def test_mmcv_roi_align_backward_runs():
    from mmcv.ops import roi_align
    feat = _ramp().requires_grad_()
    rois = torch.tensor([[0., 1., 1., 5., 5.]])
    out = roi_align(feat, rois, (2, 2), 1., 2, 'avg', True)
    out.sum().backward()
    # 16 samples, each spreads weight 1/4 (its bin's mean) bilinearly: the
    # gradient sums to 4 bins x 1.
    assert feat.grad.sum().item() == pytest.approx(4.)
    assert feat.grad[0, 0, 0].abs().sum() == 0  # row 0 is outside the box


def test_torchvision_matches_torch():
    """torchvision's compiled ops load against this torch (a mismatched pair
    fails here with 'operator torchvision::nms does not exist')."""
    import torchvision
    keep = torchvision.ops.nms(
        torch.tensor(BOXES), torch.tensor(SCORES), iou_threshold=0.5)
    assert keep.tolist() == [3, 2]
    out = torchvision.ops.roi_align(
        _ramp(), [torch.tensor([[1., 1., 5., 5.]])], (2, 2), 1., 2, True)
    torch.testing.assert_close(out[0, 0],
                               torch.tensor([[16.5, 18.5], [36.5, 38.5]]))


def test_numpy_1_keeps_mmcv_adjust_hue_sane(data_root):
    """numpy 2 breaks mmcv 2.1's adjust_hue (its uint8 hue rotation casts a
    negative ``hue_factor * 255`` to uint8), the reason numpy is pinned to
    1.26. On a real CIFAR-10 image: a hue shift of -0.1 changes the colours,
    and shifting back by +0.1 restores them up to HSV rounding."""
    import mmcv
    assert int(np.__version__.split('.')[0]) < 2
    path = next((data_root / 'cls' / 'cifar10' / 'test').glob('*/0000.jpg'))
    img = mmcv.imread(str(path))
    assert img.shape == (32, 32, 3) and img.std() > 10

    def diff(a, b):
        return np.abs(a.astype(int) - b.astype(int))

    for backend in ('cv2', 'pillow'):
        assert diff(mmcv.adjust_hue(img, 0., backend=backend),
                    img).mean() < 0.5
        shifted = mmcv.adjust_hue(img, -0.1, backend=backend)
        assert shifted.dtype == np.uint8
        assert diff(shifted, img).mean() > 5
        back = mmcv.adjust_hue(shifted, 0.1, backend=backend)
        assert diff(back, img).mean() < 1.5
        # A hue rotation keeps the HSV value (the max channel).
        assert diff(shifted.max(-1), img.max(-1)).max() <= 4
