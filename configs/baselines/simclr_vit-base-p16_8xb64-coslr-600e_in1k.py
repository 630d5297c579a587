# Table 1 baseline "SimCLR (w/ ViT)": the MR-simclr recipe with no mask and no
# decoder, i.e. mmpretrain's SimCLR loss on the class token of the same ViT-B/16
# (tests/test_mrcl_equivalence.py checks that the two losses agree).
_base_ = '../mrcl/mrcl-simclr_vit-base-p16_8xb64-coslr-600e_in1k.py'

model = dict(
    backbone=dict(mask_ratio=0.0),
    decoder=None,
    rec_head=None)
