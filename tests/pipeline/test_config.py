import dataclasses

import pytest

from sparkcnn.pipeline import config
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.errors import ConfigError


def test_default_toml_equals_built_in_defaults():
    assert config.load().to_dict() == Config().to_dict()


def test_overrides_are_typed():
    cfg = config.load(overrides=["train.learning_rate=0.1", "run.root=/tmp/x", "train.epochs=2"])
    assert cfg.train.learning_rate == 0.1 and cfg.run.root == "/tmp/x"
    assert cfg.train.epochs == 2 and isinstance(cfg.train.learning_rate, float)


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nbatch_size = 64\nshard_size = 16\n")
    cfg = config.load(path, ["train.shard_size=32"])
    assert (cfg.train.batch_size, cfg.train.shard_size) == (64, 32)


@pytest.mark.parametrize("override,message", [
    ("train.learnig_rate=0.1", "train.learnig_rate"),
    ("model.layers=3", "model.layers"),
    ("train.shard_size=0", "train.shard_size"),
    ("nosection.key=1", "nosection"),
    ("justtext", "section.key=value"),
    ("train.lr_schedule='step'", "train.lr_schedule"),
    ("data.resize=[32]", "data.resize"),
    ("data.augment.flip=1", "data.augment.flip"),
    ("data.augment.mirror=true", "data.augment.mirror"),
    ("data.test_fraction=1.0", "data.test_fraction"),
    ("spark.jit='c2'", "spark.jit"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(overrides=[override])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


def test_only_model_and_train_shape_results():
    base = Config()
    other = dataclasses.replace(base, spark=dataclasses.replace(base.spark, partitions=7))
    assert other.fingerprint() == base.fingerprint()
    changed = config.load(overrides=["train.seed=3"])
    assert changed.fingerprint() != base.fingerprint()
    moved = config.load(overrides=['data.path="/elsewhere/cifar.tar.gz"'])
    assert moved.fingerprint() == base.fingerprint()  # the data's content enters through ingest's digest
    augmented = config.load(overrides=["data.augment.flip=true"])
    assert augmented.fingerprint() != base.fingerprint() and augmented.data.augment.flip is True
    assert "data" not in base.result_settings()  # runs made before the data settings keep their identities
