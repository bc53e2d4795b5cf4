"""The PyTorch backend (CPU, CUDA)."""
