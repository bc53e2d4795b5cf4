"""Data sets in their real on-disk layouts, synthetic data in the same layouts, sampling,
transforms and the prefetching loader."""
