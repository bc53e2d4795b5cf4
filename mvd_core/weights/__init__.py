"""Weights: checkpoints, conversion between frameworks, pretrained trunks and export."""
