"""The segmentation model: backbones (the small CNN, the dilated ResNet-D8) and their one registry
(:mod:`.registry`), the small CNN's synthetic pretext and its ``init`` / ``freeze`` (:mod:`.pretext`),
mmseg's decode-head convolutions around a block (:mod:`.mmseg_heads`), the segmenter and its
LightningModule (:mod:`.segmenter`), test-time inference: whole image, sliding window, multi-scale
+ flip (:mod:`.inference`), and per-image confusion counts (:mod:`.image_counts`)."""
