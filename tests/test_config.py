"""Configs: recipes load into frozen dataclasses; overrides and bad input are handled."""

import dataclasses
import pickle

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


# ------------------------------------------------------------------ one schema of choices

#: the choice fields and their values, written out by hand (the config's fields must say so)
EXPECTED_CHOICES = {
    "data.dataset": ("sysu", "regdb", "llcm", "manifest"), "data.sampler": ("ms", "pt"),
    "data.augment": ("ms", "pt"), "data.resize": ("lanczos", "bilinear"),
    "data.erasing": ("ms", "zhong"), "model.feat_norm": ("part", "joint", "none"),
    "model.head_init": ("framework", "pt"),
    "loss.preset": ("id", "id+tri", "id+tri+kldiv", "mvd-pt"),
    "loss.triplet": ("batch_hard", "ranked_list"), "loss.kl": ("proper", "legacy"),
    "loss.cml_lse": ("legacy", "exact"), "optim.name": ("adam", "sgd"), "schedule.kind": ("ms", "pt"),
    "eval.sysu_mode": ("all", "indoor"), "eval.shot": ("single", "multi"),
    "eval.regdb_mode": ("v2t", "t2v"), "eval.llcm_mode": ("t2v", "v2t"), "eval.metric": ("euclidean", "cosine"),
    "eval.gallery_draw": ("agw", "official", "seeded"), "run.backend": ("torch", "mindspore"),
    "run.amp": ("none", "bf16", "fp16"), "run.ms_mode": ("graph", "pynative"),
    "run.precision": ("fp32", "fp64"),
}


def test_choices_live_in_the_fields():
    found = {f"{sec}.{k}": v for sec, cls in C.SECTIONS.items() for k, v in C.choices(cls).items()}
    assert found == EXPECTED_CHOICES, "a choice changed: say so in EXPECTED_CHOICES too"
    assert not hasattr(C, "CHOICES")  # no second table
    default = C.Config()
    for key, values in found.items():
        sec, _, name = key.partition(".")
        assert getattr(getattr(default, sec), name) in values, key  # every default is a choice
        assert C.field_choice(key).doc, f"{key}: a choice needs a doc (it is the CLI's help)"
    with pytest.raises(ConfigError, match="model.width: not a config choice"):
        C.field_choice("model.width")


@pytest.mark.parametrize("key, value", [
    ("optim.lr", 0.01), ("optim.lr", 1e-5), ("schedule.epochs", 3), ("model.cam", True),
    ("data.root", "/data/with space/SYSU"), ("run.tag", "yes"), ("run.tag", "007"), ("run.tag", ""),
    ("model.vib_hidden", (32, 16)), ("schedule.milestones", ()), ("loss.preset", "id+tri"),
])
def test_a_setting_is_its_typed_value_and_its_text(key, value):
    """A typed Setting is applied as its value; its text is a --set line meaning the same
    (what logs show, and what code looking for "key=" among overrides sees)."""
    s = C.Setting(key, value, "--flag")
    sec, _, name = key.partition(".")
    typed = getattr(getattr(C.load_config("tiny", [s]), sec), name)
    assert typed == value and type(typed) is type(value)
    assert str(s).startswith(f"{key}=")
    assert getattr(getattr(C.load_config("tiny", [str(s)]), sec), name) == value
    back = pickle.loads(pickle.dumps(s))
    assert isinstance(back, C.Setting) and (back.key, back.value, back.source) == (key, value, "--flag")


def test_settings_are_not_parsed_again_and_errors_name_the_option(monkeypatch, tmp_path):
    from pathlib import Path

    calls = []
    real = C.parse_override
    monkeypatch.setattr(C, "parse_override", lambda e: calls.append(e) or real(e))
    cfg = C.load_config("tiny", [C.Setting("data.root", Path(tmp_path) / "a: b", "--data-path"),
                                 C.Setting("optim.lr", 2, "--lr"), "model.width=8"])
    assert calls == ["model.width=8"]  # only the --set string is parsed
    assert cfg.data.root == str(tmp_path / "a: b") and cfg.optim.lr == 2.0 and cfg.model.width == 8
    with pytest.raises(ConfigError, match=r"^--trial: data.trial=11 is out of range: expected an integer in \[1, 10\]"):
        C.load_config("tiny", [C.Setting("data.trial", 11, "--trial")])
    with pytest.raises(ConfigError, match=r"^--loss-func: loss.preset='x' is not one of id, id\+tri"):
        C.load_config("tiny", [C.Setting("loss.preset", "x", "--loss-func")])
    with pytest.raises(ConfigError, match="expected an integer"):
        C.load_config("tiny", [C.Setting("schedule.epochs", "3", "--epochs")])  # no YAML guessing


def test_a_new_choice_reaches_the_cli_with_no_cli_edit():
    """Change loss.preset's Choice (only the config field) before the CLI is built: `mvd train
    --help` lists the new value, --loss-func takes it into the config and refuses the removed one."""
    import subprocess
    import sys

    code = (
        "import typing, mvd_core.config as C\n"
        "C.LossConfig.__annotations__['preset'] = typing.Annotated[str, C.Choice('id', 'id+tri', 'id+tri+kldiv', 'zz-new', doc='Loss terms')]\n"
        "from typer.testing import CliRunner\n"
        "from mvd_cli.app import app\n"
        "import mvd_core.train.driver as D\n"
        "seen = []\n"
        "D.train = lambda cfg=None, **k: seen.append(cfg) or (_ for _ in ()).throw(SystemExit(0))\n"
        "r = CliRunner().invoke(app, ['train', '--help'], env={'COLUMNS': '200'})\n"
        "print('HELP', '<id|id+tri|id+tri+kldiv|zz-new>' in r.output)\n"
        "r = CliRunner().invoke(app, ['train', '--config', 'tiny', '--loss-func', 'zz-new'])\n"
        "print('CFG', seen[0].loss.preset)\n"
        "r = CliRunner().invoke(app, ['train', '--config', 'tiny', '--loss-func', 'mvd-pt'])\n"
        "print('GONE', r.exit_code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "HELP True" in out.stdout and "CFG zz-new" in out.stdout and "GONE 2" in out.stdout


def test_cli_options_reach_the_config_typed(monkeypatch, tmp_path):
    """Every option that sets one config key arrives as its typed value (no --set string is
    parsed), and the choice options take exactly the config's choices."""
    from typer.testing import CliRunner

    import mvd_core.train.driver as D
    from mvd_cli import common, train
    from mvd_cli.app import app

    seen = []
    monkeypatch.setattr(D, "train", lambda cfg=None, **k: seen.append(cfg) or (_ for _ in ()).throw(SystemExit(0)))
    parsed = []
    real = C.parse_override
    monkeypatch.setattr(C, "parse_override", lambda e: parsed.append(e) or real(e))
    data = tmp_path / "dir with: colon"
    r = CliRunner().invoke(app, [
        "train", "--config", "tiny", "--backend", "torch", "--ms-mode", "graph", "--dataset", "RegDB",
        "--data-path", str(data), "--optim", "sgd", "--lr", "0.125", "--pretrain", str(tmp_path / "w.pth"),
        "--ckpt", "007", "--epochs", "3", "--warmup-steps", "1", "--start-decay", "2", "--end-decay", "3",
        "--loss-func", "id+tri", "--trial", "4", "--sysu-mode", "indoor", "--regdb-mode", "t2v",
        "--seed", "5", "--val-ids", "2", "--amp", "bf16", "--out", str(tmp_path / "runs"),
        "--channels-last", "--set", "model.width=8",
    ])
    assert r.exit_code == 0, r.output
    cfg = seen[0]
    assert set(parsed) == {"model.width=8"}  # only --set is parsed (once to check --nproc, once to train)
    assert (cfg.run.backend, cfg.run.ms_mode, cfg.data.dataset, cfg.data.root) == ("torch", "graph", "regdb", str(data))
    assert (cfg.optim.name, cfg.optim.lr, cfg.model.pretrain, cfg.run.tag) == ("sgd", 0.125, str(tmp_path / "w.pth"), "007")
    assert (cfg.schedule.epochs, cfg.schedule.warmup, cfg.schedule.start_decay, cfg.schedule.end_decay) == (3, 1, 2, 3)
    assert (cfg.loss.preset, cfg.data.trial, cfg.eval.sysu_mode, cfg.eval.regdb_mode) == ("id+tri", 4, "indoor", "t2v")
    assert (cfg.run.seed, cfg.run.val_ids, cfg.run.amp, cfg.run.out) == (5, 2, "bf16", str(tmp_path / "runs"))
    assert cfg.run.channels_last is True and cfg.model.width == 8
    # every config key a train option sets is a real key; the choice options are the config's
    for key in train.CONFIG_FLAGS.values():
        sec, _, name = key.partition(".")
        assert hasattr(getattr(C.Config(), sec), name), key
    for key in ("data.dataset", "optim.name", "loss.preset", "eval.sysu_mode", "eval.regdb_mode",
                "run.amp", "run.backend", "run.ms_mode"):
        assert tuple(e.value for e in common.choice_enum(key)) == EXPECTED_CHOICES[key]
    r = CliRunner().invoke(app, ["train", "--config", "tiny", "--trial", "11"])
    assert r.exit_code == 2 and "--trial: data.trial=11 is out of range" in r.output
