"""Data sets in their real on-disk layouts, synthetic data in the same layouts, sampling,
transforms and the prefetching loader.

Modules (NumPy/Pillow/stdlib only):

* :mod:`~mvd_core.data.base` — ``ImageSet``, ``TrainSet``, ``TestSet``, ``load_images`` (the
  containers every reader returns);
* :mod:`~mvd_core.data.sysu` — SYSU-MM01: the raw folder and the preprocessed cache, read
  (``load_sysu_raw_train``, ``load_sysu_test``, ``load_sysu_cache``) and written
  (``prepare_sysu``: the four .npy files + a manifest);
* :mod:`~mvd_core.data.regdb` — RegDB (``load_regdb_train``, ``load_regdb_test``);
* :mod:`~mvd_core.data.llcm` — LLCM as its public code reads it (``load_llcm_train``, ``load_llcm_test``);
* :mod:`~mvd_core.data.sets` — ``load_train``, ``load_test`` by ``data.dataset`` name;
* :mod:`~mvd_core.data.splits` — ``carve_validation``;
* :mod:`~mvd_core.data.manifest` — your own data set as a CSV;
* :mod:`~mvd_core.data.synth` — ``synth_sysu``, ``synth_regdb``, ``synth_llcm`` (synthetic people, real layouts);
* :mod:`~mvd_core.data.sampler` — ``IdentitySampler`` (``ms`` / ``pt``);
* :mod:`~mvd_core.data.transforms` — ``TrainTransform``, ``test_images``;
* :mod:`~mvd_core.data.loader` — ``TrainLoader`` (deterministic per (seed, epoch, step), threads);
* :mod:`~mvd_core.data.imageio` — decoding/resizing with errors naming the file.
"""
