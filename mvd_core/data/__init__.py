"""Data sets in their real on-disk layouts, synthetic data in the same layouts, sampling,
transforms and the prefetching loader.

Modules (NumPy/Pillow/stdlib only):

* :mod:`~mvd_core.data.datasets` — ``ImageSet``, ``TrainSet``, ``TestSet``; ``load_train``,
  ``load_test``, ``carve_validation``, ``load_images`` (SYSU-MM01 raw folder and preprocessed
  cache, RegDB);
* :mod:`~mvd_core.data.prepare` — ``prepare_sysu`` (the four .npy files + a manifest);
* :mod:`~mvd_core.data.synth` — ``synth_sysu``, ``synth_regdb`` (synthetic people, real layouts);
* :mod:`~mvd_core.data.sampler` — ``IdentitySampler`` (``ms`` / ``pt``);
* :mod:`~mvd_core.data.transforms` — ``TrainTransform``, ``test_images``;
* :mod:`~mvd_core.data.loader` — ``TrainLoader`` (deterministic per (seed, epoch, step), threads);
* :mod:`~mvd_core.data.imageio` — decoding/resizing with errors naming the file.
"""
