"""Model definition shared by every backend: canonical parameter names and shapes, initial weights, loss constants."""
