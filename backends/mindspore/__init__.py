"""The MindSpore backend (CPU, GPU, Ascend)."""
