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


#: modules whose tests are independent of each other and expensive: each test is its own work
#: unit, so the two workers share them (every other module is one unit, on one worker, so its
#: module fixtures are built once)
SPREAD = {"test_e2e"}

#: the costliest work units first (seconds of `make test --durations`, one idle 2-core run), so
#: neither worker is left with a long one at the end; every other unit follows in file order
HEAVY = (
    "tests/test_parity.py",  # ~520: graph + pynative fixtures, sweep, perturbation
    "tests/test_mindspore_backend.py",  # ~330
    "tests/test_e2e.py::test_cell[mvd-pt-regdb-mindspore-graph]",  # ~270
    "tests/test_readme.py",  # ~245
    "tests/test_e2e.py::test_cell[mvd-ms-sysu-npy-mindspore-graph]",  # ~235
    "tests/test_resume.py",  # ~150
    "tests/test_e2e.py::test_cell[tiny-sysu-raw-mindspore-pynative]",  # ~145
    "tests/test_e2e.py::test_cell[demo-sysu-npy-mindspore-pynative]",  # ~135
)


def _unit(nodeid: str) -> str:
    """The work unit of a test: its module, or the test itself in a SPREAD module."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path.rpartition("/")[2].removesuffix(".py") in SPREAD else path


def _rank(nodeid: str) -> int:
    unit = _unit(nodeid)
    return HEAVY.index(unit) if unit in HEAVY else len(HEAVY)


def pytest_collection_modifyitems(config, items):
    # the same stable order on every worker: the scheduler hands out units in this order
    items.sort(key=lambda item: _rank(item.nodeid))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook (absent with -p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (the Makefile's): one unit per module (per test in SPREAD modules),
    in collection order. pytest-xdist's own loadgroup reads ``xdist_group`` marks by renaming
    node ids, which pytest 9.2 no longer allows (the marks were silently ignored)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the HEAVY-first collection order
    return ByUnit(config, log)
