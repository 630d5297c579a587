import numpy as np
import pytest
import torch
from mmengine.runner import set_random_seed
from mmpretrain.registry import MODELS

from mrcl_plugin.models.utils import (BlockMaskGenerator, GridMaskGenerator,
                                      RandomMaskGenerator, num_masked)
from mrcl_testing import (backbone_cfg, build, logged_iterations, run_tool,
                          train_command, two_views)

GENERATORS = [RandomMaskGenerator(), BlockMaskGenerator(), GridMaskGenerator()]
IDS = ['random', 'block', 'grid']


@pytest.mark.parametrize('gen', GENERATORS, ids=IDS)
@pytest.mark.parametrize('grid', [(8, 8), (14, 14), (6, 10)])
@pytest.mark.parametrize('ratio', [0.0, 0.1, 0.2, 0.5, 0.75])
def test_exact_masked_count(gen, grid, ratio):
    n = grid[0] * grid[1]
    mask = gen(16, grid, ratio, 'cpu')
    assert mask.shape == (16, n) and mask.dtype == torch.bool
    # MAE keeps exactly int(N * (1 - r)) tokens
    assert (mask.sum(1) == n - int(n * (1 - ratio))).all()


def test_num_masked_matches_mae():
    assert num_masked(196, 0.75) == 147
    assert num_masked(196, 0.2) == 40  # 156 visible
    assert num_masked(64, 0.0) == 0


@pytest.mark.parametrize('gen', GENERATORS, ids=IDS)
def test_masks_differ_across_the_batch(gen):
    mask = gen(32, (14, 14), 0.2, 'cpu')
    assert len({tuple(m.tolist()) for m in mask}) > 16


@pytest.mark.parametrize('gen', GENERATORS, ids=IDS)
def test_reproducible_under_a_seed(gen):
    set_random_seed(7)
    first = gen(8, (14, 14), 0.3, 'cpu')
    set_random_seed(7)
    again = gen(8, (14, 14), 0.3, 'cpu')
    set_random_seed(8)
    other = gen(8, (14, 14), 0.3, 'cpu')
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def masked_neighbour_fraction(mask: torch.Tensor, grid) -> float:
    """Share of masked patches with a masked 4-neighbour."""
    m = mask.view(-1, *grid).float()
    pad = torch.nn.functional.pad(m, (1, 1, 1, 1))
    neighbours = (pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] +
                  pad[:, 1:-1, 2:])
    return ((neighbours > 0) & (m > 0)).sum().item() / m.sum().item()


def test_block_masks_are_blocks():
    set_random_seed(0)
    block = BlockMaskGenerator()(64, (14, 14), 0.3, 'cpu')
    random = RandomMaskGenerator()(64, (14, 14), 0.3, 'cpu')
    # BEiT's rectangles of >= 4 patches: nearly every masked patch touches
    # another one; at r=0.3 random sampling leaves about half isolated.
    assert masked_neighbour_fraction(block, (14, 14)) > 0.95
    assert masked_neighbour_fraction(random, (14, 14)) < 0.8


def test_grid_masks_are_evenly_spaced():
    set_random_seed(0)
    mask = GridMaskGenerator()(16, (14, 14), 0.25, 'cpu')
    for row in mask:
        idx = row.nonzero().flatten()
        # r=0.25 masks every 4th patch in raster order
        assert (idx.diff() == 4).all()
    mask = GridMaskGenerator()(16, (14, 14), 0.3, 'cpu')
    for row in mask:
        gaps = row.nonzero().flatten().diff()
        step = 196 / 58
        assert set(gaps.tolist()) <= {int(np.floor(step)), int(np.ceil(step))}
    # phases differ between images
    assert len({tuple(m.tolist()) for m in mask}) > 1


@pytest.mark.parametrize('gen', ['RandomMaskGenerator', 'BlockMaskGenerator',
                                 'GridMaskGenerator'])
def test_each_view_gets_its_own_mask(gen):
    """MRCLViT masks each image of the stacked views separately; the visible
    tokens it encodes are exactly the unmasked ones."""
    backbone = build(backbone_cfg(0.25, mask_generator=dict(type=gen)))
    v1, v2 = two_views(8)
    latent, mask, ids_restore = backbone(torch.cat([v1, v2]))
    assert latent.shape == (16, 1 + 48, 64)
    assert (mask.sum(1) == 16).all()
    assert not torch.equal(mask[:8], mask[8:])
    # ids_restore undoes [visible, masked] ordering
    order = torch.argsort(ids_restore, dim=1)
    assert (mask.gather(1, order[:, :48]) == 0).all()
    assert (mask.gather(1, order[:, 48:]) == 1).all()


def test_given_mask_is_reused():
    backbone = build(backbone_cfg(0.25))
    x = torch.cat(two_views(4))
    _, mask, _ = backbone(x)
    latent_a, mask_a, _ = backbone(x, mask=mask.bool())
    latent_b, mask_b, _ = backbone(x, mask=mask.bool())
    assert torch.equal(mask_a, mask)
    torch.testing.assert_close(latent_a, latent_b)


# -- a generator of one's own ------------------------------------------------


@MODELS.register_module()
class StripeMaskGenerator:
    """The first masked-count patches in raster order (a stripe of rows),
    the same for every image: a user's generator, not one of ours."""
    calls = []

    def __call__(self, batch_size, patch_resolution, mask_ratio, device):
        self.calls.append((batch_size, tuple(patch_resolution), mask_ratio))
        n = patch_resolution[0] * patch_resolution[1]
        mask = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
        mask[:, :num_masked(n, mask_ratio)] = True
        return mask


@MODELS.register_module()
class OffByOneMaskGenerator(StripeMaskGenerator):
    """Breaks the contract: one patch too few in the last image."""

    def __call__(self, *args):
        mask = super().__call__(*args)
        mask[-1, mask[-1].nonzero()[-1]] = False
        return mask


@MODELS.register_module()
class FloatMaskGenerator(StripeMaskGenerator):
    """Breaks the contract: a float mask."""

    def __call__(self, *args):
        return super().__call__(*args).float()


@MODELS.register_module()
class ShortMaskGenerator(StripeMaskGenerator):
    """Breaks the contract: a patch missing from each row."""

    def __call__(self, *args):
        return super().__call__(*args)[:, 1:]


def test_generator_builds_whatever_the_default_scope():
    """An mmdet or mmseg config (or a test that ran one) leaves its scope
    as the default; the generator still comes from mmpretrain's registry
    (before: "RandomMaskGenerator is not in the mmdet::model registry")."""
    from mmengine.registry import DefaultScope
    import mmdet.models  # noqa: F401  registers the mmdet scope
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(dict(type='mmpretrain.MRCLViT',
                                     arch='deit-tiny', img_size=32,
                                     patch_size=16))
    assert isinstance(backbone.mask_generator, RandomMaskGenerator)


def test_a_registered_generator_trains(tmp_path, mrcl_data_env):
    """The small config trains with a generator registered here; the
    encoder saw its masks: 13 of the 64 patches, rows 0-1 and 5 more."""
    StripeMaskGenerator.calls.clear()
    assert run_tool('train.py', train_command(tmp_path, **{
        'model.backbone.mask_generator.type': 'StripeMaskGenerator',
        'train_cfg.max_iters': 2})[2:]) == ''
    # batch 8, two views each, 8x8 patches, the config's r = 0.2
    assert StripeMaskGenerator.calls[:2] == [(16, (8, 8), 0.2)] * 2
    logged = logged_iterations(tmp_path)
    assert sorted(logged) == [1, 2]
    assert all(np.isfinite(logged[i]['loss_rec_masked']) for i in logged)
    assert (tmp_path / 'iter_2.pth').is_file()

    backbone = build(backbone_cfg(
        0.2, mask_generator=dict(type='StripeMaskGenerator')))
    _, mask, ids_restore = backbone(torch.cat(two_views(4)))
    assert (mask[:, :13] == 1).all() and (mask[:, 13:] == 0).all()


@pytest.mark.parametrize('gen, message', [
    ('OffByOneMaskGenerator', 'OffByOneMaskGenerator masked 12 of 64 '
     'patches in row 7, expected exactly 13 (mask_ratio 0.2)'),
    ('FloatMaskGenerator', 'FloatMaskGenerator returned (8, 64) '
     'torch.float32, expected a (8, 64) torch.bool mask'),
    ('ShortMaskGenerator', 'ShortMaskGenerator returned (8, 63) '
     'torch.bool, expected a (8, 64) torch.bool mask'),
])
def test_a_generator_breaking_the_contract_is_named(gen, message):
    backbone = build(backbone_cfg(0.2, mask_generator=dict(type=gen)))
    with pytest.raises(ValueError) as err:
        backbone(torch.cat(two_views(4)))
    assert str(err.value) == f'MRCLViT: mask_generator {message}'


def test_tools_train_names_the_generator_in_one_line(tmp_path,
                                                      mrcl_data_env):
    message = run_tool('train.py', train_command(tmp_path, **{
        'model.backbone.mask_generator.type': 'OffByOneMaskGenerator'})[2:])
    assert message == (
        'error: MRCLViT: mask_generator OffByOneMaskGenerator masked '
        '12 of 64 patches in row 15, expected exactly 13 (mask_ratio 0.2)')
    assert not list(tmp_path.rglob('*.pth'))
