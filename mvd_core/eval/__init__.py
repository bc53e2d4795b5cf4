"""Evaluation: metrics, protocols, re-ranking, test-time augmentation, features and reports."""
