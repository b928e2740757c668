"""Backbones, the segmentation model and its LightningModule."""
