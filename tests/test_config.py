"""Configs: recipes load into frozen dataclasses; overrides and bad input are handled."""

import dataclasses

import pytest
import yaml

from mvd_core import config as C
from mvd_core.errors import ConfigError


def test_recipes_are_shipped():
    assert {"mvd-ms", "mvd-pt", "tiny", "demo"} <= set(C.recipe_names())


def test_mvd_ms_is_the_seed_defaults():
    cfg = C.load_config("mvd-ms")
    assert cfg.recipe == "mvd-ms"
    assert (cfg.data.height, cfg.data.width) == (288, 144)
    assert (cfg.data.num_ids, cfg.data.num_pos) == (8, 4)
    assert cfg.optim.name == "adam" and cfg.optim.lr == pytest.approx(3.5e-3)  # the published runs
    assert (cfg.schedule.warmup, cfg.schedule.start_decay, cfg.schedule.end_decay) == (5, 15, 27)
    assert cfg.schedule.epochs == 80
    assert cfg.loss.preset == "id+tri+kldiv"
    assert cfg.model.last_stride == 2 and not cfg.model.cam
    assert cfg.optim.trunk_lr_mult == pytest.approx(0.1)


def test_mvd_pt_is_the_paper_code():
    cfg = C.load_config("mvd-pt")
    assert (cfg.data.height, cfg.data.width) == (256, 128)
    assert cfg.data.num_ids * cfg.data.num_pos * 2 == 128
    assert cfg.model.cam and cfg.model.last_stride == 1 and not cfg.model.bnneck_bias
    assert cfg.loss.preset == "mvd-pt" and cfg.loss.label_smoothing == pytest.approx(0.1)
    assert cfg.loss.triplet == "ranked_list"
    assert cfg.optim.lr == pytest.approx(2.6e-4) and cfg.schedule.epochs == 600
    assert cfg.schedule.milestones == (210,)


def test_tiny_inherits_and_shrinks():
    cfg = C.load_config("tiny")
    assert cfg.recipe == "tiny"
    assert cfg.model.width == 8 and (cfg.data.height, cfg.data.width) == (64, 32)
    assert cfg.loss.preset == "id+tri+kldiv"  # from its base, mvd-ms
    assert cfg.model.vib_hidden == (128, 64)
    assert cfg.model.residual_gain == 0.1


def test_demo_is_tiny_with_a_longer_schedule():
    tiny, demo = C.load_config("tiny"), C.load_config("demo")
    assert demo.recipe == "demo" and demo.model == tiny.model
    assert demo.loss.preset == "id+tri+kldiv"
    assert (demo.data.num_ids, demo.data.num_pos) == (16, 4)  # batch 128
    assert demo.schedule.epochs > tiny.schedule.epochs


def test_configs_are_frozen():
    cfg = C.load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.width = 3  # type: ignore[misc]


def test_overrides_are_typed():
    cfg = C.load_config("tiny", ["model.width=16", "optim.lr=1e-4", "model.cam=true",
                                 "model.vib_hidden=[32, 16]", "loss.kl=legacy"])
    assert cfg.model.width == 16 and cfg.optim.lr == pytest.approx(1e-4) and cfg.model.cam
    assert cfg.model.vib_hidden == (32, 16) and cfg.loss.kl == "legacy"
    # an int is accepted where a float is expected
    assert C.load_config("tiny", ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    "expr, needle",
    [
        ("model.widht=16", "unknown key model.widht"),
        ("modle.width=16", "unknown section 'modle'"),
        ("model.width=abc", "model.width: expected an integer"),
        ("model.cam=3", "model.cam: expected true/false"),
        ("loss.kl=wrong", "loss.kl='wrong' is not one of proper, legacy"),
        ("model.width", "expected section.key=value"),
        ("width=3", "expected section.key=value"),
        ("model.vib_hidden=[1]", "expected a list of 2 values"),
        ("run.precision=fp16", "run.precision='fp16' is not one of fp32, fp64"),
    ],
)
def test_bad_overrides_name_the_key(expr, needle):
    with pytest.raises(ConfigError, match=None) as e:
        C.load_config("tiny", [expr])
    assert needle in str(e.value)


def test_precision_defaults_to_fp32_and_fp64_is_torch_only():
    from mvd_core.errors import MvdError
    from mvd_core.registry import create_backend

    assert C.load_config("tiny").run.precision == "fp32"
    cfg = C.load_config("tiny", ["run.precision=fp64", "run.backend=mindspore"])
    assert cfg.run.precision == "fp64"
    # refused before MindSpore is imported, naming why
    with pytest.raises(MvdError, match="MindSpore 2.8 has no float64 Conv2D") as e:
        create_backend(cfg, 4)
    assert "run.precision='fp64'" in str(e.value) and "supports only fp32" in str(e.value)


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  width: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml.*malformed YAML"):
        C.load_config(str(bad))
    unknown = tmp_path / "u.yaml"
    unknown.write_text("model:\n  depth: 3\n")
    with pytest.raises(ConfigError, match=r"u.yaml: unknown key model.depth"):
        C.load_config(str(unknown))
    typed = tmp_path / "t.yaml"
    typed.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"t.yaml: optim.lr: expected a number"):
        C.load_config(str(typed))
    with pytest.raises(ConfigError, match="config file not found"):
        C.load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown recipe 'nope'.*mvd-ms"):
        C.load_config("nope")
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="loops back"):
        C.load_config(str(loop))


def test_user_yaml_can_extend_a_recipe(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: tiny\nmodel:\n  width: 4\n")
    cfg = C.load_config(str(f))
    assert cfg.model.width == 4 and cfg.data.height == 64 and cfg.recipe == "mine"


def test_resolved_config_round_trips(tmp_path):
    cfg = C.load_config("mvd-pt", ["model.width=16"])
    path = tmp_path / "run" / "config.yaml"
    C.save_config(cfg, path)
    assert C.from_dict(yaml.safe_load(path.read_text())) == cfg
    # the saved file is itself a loadable recipe
    assert C.load_config(str(path)) == cfg
    assert not list(path.parent.glob("*.tmp"))
