"""Shared test set-up: quiet frameworks, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see mvd_core.devices.cpu_threads


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sysu_root(tmp_path_factory):
    """A small synthetic SYSU-MM01 in the real raw layout (shared by the session's tests)."""
    from mvd_core.data.synth import synth_sysu

    root = tmp_path_factory.mktemp("synth") / "SYSU-MM01"
    synth_sysu(root, ids=20, images_per_cam=3, seed=0)
    return root


#: modules whose tests are independent of each other and expensive: each test is its own
#: xdist group, so the two workers share them (every other module stays on one worker)
SPREAD = {"test_e2e"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        mod = item.module.__name__.rpartition(".")[2]
        item.add_marker(pytest.mark.xdist_group(item.nodeid if mod in SPREAD else mod))
