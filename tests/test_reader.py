"""The SmartWatch reader: interface, FID extractor contract, determinism, artifacts, (slow) accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance

from uvlm.data import CORNERS, WEATHERS, SmartWatch, SplitConfig, WatchAttributes
from uvlm.errors import UserError
from uvlm.vision.artifacts import config_hash
from uvlm.vision.reader import (HEADS, FIDFeatureExtractor, ReaderConfig, SmartWatchReader, estimate_face_color,
                                fit_reader, load_reader, train_reader)

RES = 64
TINY = dict(steps=3, batch_size=4, eval_images=6, log_every=1, width=8, feature_dim=16)


def rendered(n: int, name: str = "reader-unit", start: int = 0) -> tuple[list[Image.Image], list[WatchAttributes]]:
    sw = SmartWatch(SplitConfig(name=name, resolution=RES, n_vqa=0, n_caption=0, n_generation=0))
    attrs = [sw.attributes(i) for i in range(start, start + n)]
    return [sw.renderer.render(a) for a in attrs], attrs


@pytest.fixture(scope="module")
def reader() -> SmartWatchReader:
    torch.manual_seed(0)
    return SmartWatchReader(ReaderConfig(width=8, feature_dim=16))


def test_shapes_and_read_contract(reader):
    images, _ = rendered(5)
    logits = reader.logits(images)
    assert {h: tuple(v.shape) for h, v in logits.items()} == {h: (5, n) for h, n in HEADS.items()}
    f = reader.features(images)
    assert f.shape == (5, reader.num_features) and f.dtype == torch.float32
    tokens = reader.encode(images)
    assert tokens.shape == (5, 64, reader.grid_channels)
    out = reader.read(images)
    assert len(out) == 5
    for d in out:
        a = WatchAttributes.from_dict(d)  # the reader's dicts are WatchAttributes-like
        assert 0 <= a.hour < 12 and 0 <= a.minute < 60 and 0 <= a.second < 60 and 0 <= a.battery <= 100
        assert a.weather in WEATHERS and a.weather_position in CORNERS and a.battery_position in CORNERS
        assert a.weather_position != a.battery_position


def test_input_forms_agree(reader):
    images, _ = rendered(3)
    u8 = torch.from_numpy(np.stack([np.asarray(im) for im in images]))
    fl = u8.permute(0, 3, 1, 2).float() / 255
    a, b, c = reader.features(images), reader.features(u8), reader.features(fl)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_face_colour_estimate_matches_truth():
    images, attrs = rendered(8)
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    est = estimate_face_color(x)
    true = torch.tensor([a.face_color for a in attrs])
    assert (est - true).abs().max() <= 2


def test_wrong_images_are_user_errors(reader):
    images, _ = rendered(2)
    with pytest.raises(UserError, match="64x64"):
        reader.read([images[0].resize((48, 48))])
    with pytest.raises(UserError, match="convert"):
        reader.read([images[0].convert("RGBA")])
    with pytest.raises(UserError, match="convert"):
        reader.features([images[0].convert("L")])
    with pytest.raises(UserError):
        reader.read(torch.zeros(2, 1, 64, 64))
    with pytest.raises(UserError):
        FIDFeatureExtractor(reader)(torch.rand(2, 3, 32, 32))


def test_bad_config_is_user_error():
    with pytest.raises(UserError, match="legible minimum"):
        ReaderConfig(resolution=16)
    with pytest.raises(UserError, match="arch"):
        ReaderConfig(arch="resnet")
    with pytest.raises(UserError, match="batch_size"):
        ReaderConfig(batch_size=0)
    with pytest.raises(UserError, match="lr"):
        ReaderConfig(lr="fast")


def test_fid_extractor_with_torchmetrics(reader):
    extractor = FIDFeatureExtractor(reader)
    x = torch.rand(3, 3, RES, RES)
    assert extractor(x).shape == (3, reader.num_features)

    real, _ = rendered(40, start=0)
    other, _ = rendered(40, start=40)
    to_t = lambda ims: torch.from_numpy(np.stack([np.asarray(i) for i in ims])).permute(0, 3, 1, 2).float() / 255
    real_t, other_t = to_t(real), to_t(other)

    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    fid.train()  # the metric in train mode must not put the reader in train mode (batch norm statistics)
    assert not extractor.reader.training
    fid.update(real_t, real=True)
    fid.update(real_t, real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(real_t, real=True)
    fid.update(real_t.flip(-1), real=False)  # mirrored watches: a different distribution
    different = float(fid.compute())
    # FID scales with the features' squared size (tiny for an untrained reader), so compare the two
    assert different > 0 and abs(same) < 1e-6 * different
    # two independent rendered samples of the same distribution are closer than mirrored ones
    fid.reset()
    fid.update(real_t, real=True)
    fid.update(other_t, real=False)
    assert 0 < float(fid.compute()) < different


def test_training_is_deterministic():
    r1, rec1 = fit_reader(ReaderConfig(**TINY, seed=3))
    r2, rec2 = fit_reader(ReaderConfig(**TINY, seed=3))
    r3, _ = fit_reader(ReaderConfig(**TINY, seed=4))
    s1, s2, s3 = r1.state_dict(), r2.state_dict(), r3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert rec1["test"] == rec2["test"]
    assert any(not torch.equal(s1[k], s3[k]) for k in s1 if s1[k].is_floating_point())


def test_training_states_its_plan_and_an_early_eta(caplog):
    """The reader is trained on first use (eval --generation, vision train): never silent for long, a plan line before
    the first step and a progress line with an ETA at step 10 (long before log_every), then every log_every steps."""
    cfg = ReaderConfig(**{**TINY, "steps": 24, "log_every": 20})
    with caplog.at_level("INFO", logger="uvlm.vision.reader"):
        fit_reader(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvlm.vision.reader"]
    assert lines[0] == "reader: 24 steps x 4 images at 64 px (cnn)"
    steps = [ln.split()[2] for ln in lines if ln.startswith("reader step ")]
    assert steps == ["10/24", "20/24", "24/24"]
    assert all(", eta " in ln for ln in lines if ln.startswith("reader step "))


def test_artifact_round_trip(tmp_path):
    cfg = ReaderConfig(**TINY)
    path = train_reader(cfg, out=tmp_path / "reader")
    info = json.loads((path / "info.json").read_text())
    assert set(f"acc/{h}" for h in HEADS) <= set(info["test"]) and "minute_within_1" in info["test"]
    assert info["train_minutes"] >= 0 and info["steps_done"] == cfg.steps
    assert json.loads((path / "config.json").read_text())["kind"] == "reader"
    loaded = load_reader(path)
    fresh, _ = fit_reader(cfg)
    images, _ = rendered(4)
    assert torch.equal(loaded.features(images), fresh.features(images))
    assert loaded.read(images) == fresh.read(images)
    # the cache: out=None trains once, then reuses the folder
    cached_path = train_reader(cfg)
    assert cached_path.name == config_hash(json.loads((cached_path / "config.json").read_text()))
    assert train_reader(cfg) == cached_path and torch.equal(load_reader(cached_path).features(images),
                                                            loaded.features(images))


def test_loading_bad_folders_is_user_error(tmp_path):
    with pytest.raises(UserError):
        load_reader(tmp_path / "missing")
    path = train_reader(ReaderConfig(**TINY), out=tmp_path / "r")
    cfg = json.loads((path / "config.json").read_text())
    cfg["width"] = 12  # weights no longer fit
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="does not fit"):
        load_reader(path)
    cfg["kind"] = "vq"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="reader"):
        load_reader(path)


@pytest.mark.slow
def test_short_training_reads_well_above_chance():
    reader, record = fit_reader(ReaderConfig(steps=300, batch_size=64, eval_images=300, log_every=100))
    m = record["test"]
    # chance: hour 1/12, minute 1/60, weather 1/3, corners 1/4 (1/3 as a distinct pair), battery 1/101
    assert m["acc/weather"] > 0.9 and m["acc/weather_position"] > 0.9 and m["acc/battery_position"] > 0.9
    assert m["acc/hour"] > 0.5 and m["acc/minute"] > 0.3 and m["minute_within_1"] > 0.5
    assert m["battery_mae"] < 10
