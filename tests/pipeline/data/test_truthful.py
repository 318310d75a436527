"""Data that is never silently wrong: a constant channel normalised by the std floor everywhere, one data
source per run root, scoring what the user pointed at, one writer per output, exports that say what they
wrote, decompression bombs named, and the folder-depth rule of image folders."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.data.fingerprint import fingerprint
from sparkcnn.pipeline.deploy.predict import predict_arrays
from sparkcnn.pipeline.deploy.score import OUT_LOCK
from sparkcnn.pipeline.runroot.lock import RunLock
from sparkcnn.pipeline.runroot.storage import Storage
from sparkcnn.pipeline.training.run import Run
from sparkcnn.stages.tabular import STD_FLOOR
from tests.conftest import SMALL_NET
from tests.pipeline.data.test_images import bomb

pytestmark = pytest.mark.slow

SETS = [*SMALL_NET, "train.batch_size=12", "train.shard_size=6", "train.epochs=1", "run.keep_iterations=5"]


def flags(root, data, *extra: str) -> list[str]:
    return ["--run-root", str(root), "--data", str(data), *[a for s in SETS for a in ("--set", s)], *extra]


def no_blue(root, classes=("cat", "dog", "owl"), per_class=8, seed=0):
    """DIR/<class>/<n>.png of random red and green and a blue channel that is always 0."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            pixels[:, :, 2] = 0
            Image.fromarray(pixels).save(root / c / f"{n:03d}.png")
    return root


@pytest.fixture(scope="module")
def constant(tmp_path_factory):
    """A run trained for 2 iterations on images whose blue channel is constant; its data folder also holds
    an image outside any class folder and one in a subfolder of a class folder."""
    base = tmp_path_factory.mktemp("truthful")
    data = no_blue(base / "data")
    (data / "cat" / "kittens").mkdir()
    shutil.copy(data / "cat" / "000.png", data / "cat" / "kittens" / "deep.png")
    shutil.copy(data / "dog" / "000.png", data / "stray.png")
    assert main(["train", *flags(base / "run", data, "--iterations", "2")]) == 0
    return Run.open(str(base / "run")), data


def test_a_constant_channel_is_normalised_by_the_floor_and_recorded(constant):
    run, _ = constant
    assert run.iterations_done() == 2
    assert all(np.isfinite(p).all() for p in run.params_at(2).values())
    values = run.manifest.get("ingest")["values"][stage_keys.ALL_PARTS]
    assert values["std_measured"][2] == 0.0 and values["std_floored"] == [2] and values["std_floor"] == STD_FLOOR
    mean, std = run.channel_stats()
    assert std[2] == STD_FLOOR and mean[2] == 0.0 and std[0] == values["std_measured"][0] > STD_FLOOR
    message = str(run._diverged({"iteration": 1, "stage": "i000001.loss", "what": "the training loss is not a "
                                 "finite number"}))
    assert "channel(s) 2 of the training images hardly vary" in message
    assert "smaller learning rate" not in message and "learning_rate" not in message


def test_onnx_and_predict_apply_the_same_floor(constant, tmp_path, capsys):
    import onnxruntime

    run, data = constant
    out = tmp_path / "model.onnx"
    assert main(["export", "--run-root", run.storage.url, "--format", "onnx", "--out", str(out)]) == 0
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted((data / "owl").glob("*.png"))])
    pixels[0, 0, 0, 2] = 7  # a blue pixel the floor divides by 1/255
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    expected = predict_arrays(run, run.params_at(2), pixels)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(session.run(None, {"images": pixels})[0], expected, rtol=1e-4, atol=1e-6)


def test_the_folder_depth_rule(constant):
    run, data = constant
    values = run.manifest.get("ingest")["values"][stage_keys.ALL_PARTS]
    assert values["train"] + values["test"] == 25, "the image in cat/kittens/ is a cat; stray.png is not used"
    assert values["notes"] == [f"{data}: 1 image(s) outside any class folder are not used (the first: stray.png); "
                               f"images are taken from DIR/<class>/ and its subfolders"]
    fresh = Run(config.load(overrides=[*SETS, f'data.path="{data}"', f'run.root="{data.parent / "fresh"}"']))
    assert fresh.data_notes() == values["notes"], "train prints it as a warning before ingesting"


def test_one_run_root_one_data_source(constant, tmp_path, capsys):
    run, data = constant
    saved = run.storage.read_bytes("config.json")
    other = no_blue(tmp_path / "other", seed=3)
    assert main(["train", *flags(run.storage.url, other, "--iterations", "2")]) == 2
    err = capsys.readouterr().err
    assert f"ingested {data}, and data.path {other} holds other data" in err.splitlines()[0]
    assert "use a new --run-root" in err.splitlines()[0] and "to continue" not in err
    assert run.storage.read_bytes("config.json") == saved, "config.json still names what was ingested"
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    assert main(["train", *flags(run.storage.url, moved, "--iterations", "2")]) == 0, "the same data elsewhere"
    sets = [a for s in SETS for a in ("--set", s)]
    assert main(["train", "--run-root", run.storage.url, *sets, "--iterations", "2"]) == 0, "no --data: the run's"
    shutil.copy(data / "cat" / "001.png", moved / "cat" / "added.png")
    assert main(["train", *flags(run.storage.url, moved, "--iterations", "2")]) == 2, "changed in place"
    assert "holds other data" in capsys.readouterr().err


def test_a_foreign_folder_is_scored_whole_and_a_split_cannot_apply(constant, tmp_path, capsys):
    run, data = constant
    flat = tmp_path / "flat"
    flat.mkdir()
    for n, path in enumerate(sorted((data / "owl").glob("*.png"))):
        shutil.copy(path, flat / f"{n:02d}.png")
    (flat / "zz-bomb.png").write_bytes(bomb(14000, 14000))
    assert main(["score", "--run-root", run.storage.url, "--data", str(flat), "--out", str(tmp_path / "s")]) == 2
    captured = capsys.readouterr()
    assert f"scored 8 images of {flat} (split all; skipped 1 unreadable)" in captured.out
    assert f"{flat}/zz-bomb.png: too many pixels to decode safely" in captured.err
    for split in ("test", "train"):
        assert main(["score", "--run-root", run.storage.url, "--data", str(flat), "--split", split,
                     "--out", str(tmp_path / split)]) == 2
        assert f"--split {split} cannot apply to it; score it all" in capsys.readouterr().err


def test_the_runs_own_data_is_scored_by_its_split(constant, tmp_path, capsys):
    run, _ = constant
    values = run.manifest.get("ingest")["values"][stage_keys.ALL_PARTS]
    assert main(["score", "--run-root", run.storage.url, "--out", str(tmp_path / "own")]) == 0
    out = capsys.readouterr().out
    skipped = 26 - values["test"]  # every image but the test split's, stray.png (scored unlabelled) among them
    assert f"scored {values['test']} images of " in out and f"(split test; skipped {skipped} outside split test)" in out


def test_one_scoring_per_output(constant, tmp_path, capsys):
    run, _ = constant
    out = tmp_path / "out"
    args = ["score", "--run-root", run.storage.url, "--out", str(out)]
    lock = RunLock(Storage(str(out)), folder=OUT_LOCK, what="score output")
    lock.acquire()
    try:
        assert main(args) == 3
        assert f"score output {out} is in use by process" in capsys.readouterr().err
    finally:
        lock.release()
    assert main([*args, "--iteration", "1"]) == 0
    record = json.loads(run.storage.read_bytes(f"scores/{max(run.storage.listdir('scores'))}"))
    success = json.loads((out / "_SUCCESS").read_text())
    assert record == success and record["parameters"].endswith("after 1 iterations")
    (out / "_SUCCESS").unlink()  # as a killed scoring leaves it
    assert main(args) == 2
    assert f"output {out} holds an earlier scoring that did not finish (no _SUCCESS)" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0 and (out / "_SUCCESS").exists()


def test_export_refuses_an_existing_file_and_names_what_it_wrote(constant, tmp_path, capsys):
    run, data = constant
    out = tmp_path / "model"
    assert main(["export", "--run-root", run.storage.url, "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ") and out.exists()
    assert not (tmp_path / "model.npz").exists()
    assert main(["predict", "--run-root", run.storage.url, "--checkpoint", str(out), str(data / "owl" / "001.png")]) == 0
    capsys.readouterr()
    for fmt in ("npz", "onnx"):
        assert main(["export", "--run-root", run.storage.url, "--format", fmt, "--out", str(out)]) == 2
        assert f"{out} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["export", "--run-root", run.storage.url, "--out", str(out), "--overwrite", "--iteration", "1"]) == 0


def test_predict_counts_a_bomb_and_classifies_the_others(constant, tmp_path, capsys):
    run, data = constant
    for side in (10000, 14000):
        (tmp_path / f"bomb{side}.png").write_bytes(bomb(side, side))
    good = data / "owl" / "001.png"
    args = ["predict", "--run-root", run.storage.url, str(tmp_path / "bomb10000.png"), str(good),
            str(tmp_path / "bomb14000.png")]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ")
    assert f"{tmp_path}/bomb10000.png: too many pixels to decode safely" in captured.err
    assert "2 of 3 image(s) could not be read" in captured.err


def test_a_bomb_fails_ingest_naming_the_file_without_a_resume_hint(tmp_path, capsys):
    data = no_blue(tmp_path / "data", per_class=4)
    (data / "owl" / "zzz.png").write_bytes(bomb(10000, 10000))
    assert main(["train", *flags(tmp_path / "run", data, "--iterations", "1")]) == 2
    err = capsys.readouterr().err
    assert f"{data}/owl/zzz.png: too many pixels to decode safely" in err
    assert "to continue" not in err and "resume" not in err


def test_a_fingerprint_is_of_the_content_not_the_path(tmp_path, synthetic_archive):
    copy = tmp_path / "elsewhere" / "renamed.tgz"
    copy.parent.mkdir()
    shutil.copy(synthetic_archive, copy)
    assert fingerprint(str(copy)) == fingerprint(str(synthetic_archive))
    folder = no_blue(tmp_path / "a", per_class=2)
    shutil.copytree(folder, tmp_path / "b")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"finder")
    assert fingerprint(str(tmp_path / "b")) == fingerprint(str(folder))
    (tmp_path / "b" / "cat" / "001.png").write_bytes(b"")
    assert fingerprint(str(tmp_path / "b")) != fingerprint(str(folder))
