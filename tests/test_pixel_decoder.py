"""The pixel decoder for continuous patch embeddings, trained against a small frozen random encoder."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from uvlm.errors import UserError
from uvlm.vision.artifacts import config_hash
from uvlm.vision.base import to_float_batch
from uvlm.vision.pixel_decoder import (PixelDecoder, PixelDecoderConfig, check_encoder, fit_pixel_decoder,
                                       load_pixel_decoder, train_pixel_decoder)


class RandomPatchEncoder(nn.Module):
    """A frozen random conv patch embedding: (B, 3, 64, 64) -> (B, 64, dim) tokens of an 8x8 grid."""

    def __init__(self, dim: int = 24, patch: int = 8, resolution: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Conv2d(3, dim, patch, patch)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) / (3 * patch))
            self.proj.bias.zero_()
        self.requires_grad_(False)
        self.resolution, self.dim, self.patch, self.seed = resolution, dim, patch, seed

    def config_dict(self) -> dict:
        return {"kind": "random-patch", "dim": self.dim, "patch": self.patch, "resolution": self.resolution,
                "seed": self.seed}

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        x = to_float_batch(images, self.resolution)
        return self.proj(x).flatten(2).transpose(1, 2)


SMALL = dict(steps=4, batch_size=4, channels=32, min_channels=16, eval_images=4, log_every=2)


@pytest.fixture(scope="module")
def encoder() -> RandomPatchEncoder:
    return RandomPatchEncoder()


def test_shape_and_range(encoder):
    torch.manual_seed(0)
    dec = PixelDecoder(24, (8, 8), 64, PixelDecoderConfig(channels=32, min_channels=16))
    feats = encoder.encode(torch.rand(3, 3, 64, 64)) * 50  # large features still give valid pixels
    y = dec.decode(feats)
    assert y.shape == (3, 3, 64, 64) and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # a grid that does not reach the side by doublings is resized: 7x7 tokens -> 48 px
    odd = PixelDecoder(5, (7, 7), 48, PixelDecoderConfig(channels=16, min_channels=8))
    assert odd.decode(torch.randn(2, 49, 5)).shape == (2, 3, 48, 48)


def test_wrong_feature_shape_is_user_error():
    dec = PixelDecoder(24, (8, 8), 64, PixelDecoderConfig(channels=16, min_channels=8))
    with pytest.raises(UserError, match=r"\(B, 64, 24\)"):
        dec.decode(torch.randn(2, 16, 24))
    with pytest.raises(UserError):
        dec.decode(torch.randn(2, 64, 12))


def test_bad_encoder_and_config_are_user_errors():
    class NoIdentity:
        resolution = 64

        def encode(self, x):
            return torch.zeros(len(x), 64, 4)

    with pytest.raises(UserError, match="config_dict"):
        train_pixel_decoder(NoIdentity(), PixelDecoderConfig(**SMALL))

    class CodeIds(RandomPatchEncoder):
        def encode(self, images):
            return torch.zeros(1, 64, dtype=torch.int64)

    with pytest.raises(UserError, match="float"):
        fit_pixel_decoder(CodeIds(), PixelDecoderConfig(**SMALL))
    with pytest.raises(UserError, match="channels"):
        PixelDecoderConfig(channels=0)
    with pytest.raises(UserError, match="lr"):
        PixelDecoderConfig(lr="fast")


def test_short_training_lowers_the_loss(encoder):
    cfg = PixelDecoderConfig(steps=40, batch_size=8, channels=32, min_channels=16, lr=3e-3, eval_images=16,
                             eval_every=20, log_every=20)
    dec, rec = fit_pixel_decoder(encoder, cfg)
    assert rec["last_loss"] < 0.5 * rec["first_loss"]
    assert rec["test"]["psnr"] > rec["curve"][0]["psnr"] - 0.5 and rec["test"]["psnr"] > 12


def test_training_states_its_plan_and_an_early_eta(encoder, caplog):
    """A long training is never silent: a plan line before the first step, a progress line with an ETA at step 10
    (long before log_every), then every log_every steps."""
    cfg = PixelDecoderConfig(steps=24, batch_size=2, channels=16, min_channels=8, eval_images=2, log_every=20)
    with caplog.at_level("INFO", logger="uvlm.vision.pixel_decoder"):
        fit_pixel_decoder(encoder, cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvlm.vision.pixel_decoder"]
    assert lines[0].startswith("pixel-decoder: 24 steps x 2 images at 64 px, decoding a 8x8 grid of 24-dim")
    steps = [ln.split()[2] for ln in lines if ln.startswith("pixel-decoder step ")]
    assert steps == ["10/24", "20/24", "24/24"]
    assert all(" eta " in ln for ln in lines if ln.startswith("pixel-decoder step "))


def test_training_is_deterministic(encoder):
    a, ra = fit_pixel_decoder(encoder, PixelDecoderConfig(**SMALL, seed=1))
    b, rb = fit_pixel_decoder(encoder, PixelDecoderConfig(**SMALL, seed=1))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and ra["test"] == rb["test"]


def test_artifact_round_trip_and_encoder_identity(encoder, tmp_path):
    cfg = PixelDecoderConfig(**SMALL)
    path = train_pixel_decoder(encoder, cfg, out=tmp_path / "dec")
    saved = json.loads((path / "config.json").read_text())
    assert saved["kind"] == "pixel-decoder" and saved["encoder"] == encoder.config_dict()
    assert saved["encoder_hash"] == config_hash(encoder.config_dict()) and saved["grid"] == [8, 8]
    info = json.loads((path / "info.json").read_text())
    assert "psnr" in info["test"] and info["train_minutes"] >= 0

    loaded = load_pixel_decoder(path)
    fresh, _ = fit_pixel_decoder(encoder, cfg)
    feats = encoder.encode(torch.rand(2, 3, 64, 64))
    assert torch.equal(loaded.decode(feats), fresh.decode(feats))
    check_encoder(loaded, encoder)
    with pytest.raises(UserError, match="trained on encoder"):
        check_encoder(loaded, RandomPatchEncoder(seed=5))

    cached_path = train_pixel_decoder(encoder, cfg)  # out=None: the cache, reused on the second call
    assert cached_path.name == config_hash(json.loads((cached_path / "config.json").read_text()))
    assert train_pixel_decoder(encoder, cfg) == cached_path
    assert torch.equal(load_pixel_decoder(cached_path).decode(feats), loaded.decode(feats))

    with pytest.raises(UserError, match="pixel-decoder"):
        from uvlm.vision.reader import load_reader
        load_reader(path)


def test_training_works_inside_no_grad(encoder, tmp_path):
    """A source's first decode trains its decoder lazily, and callers decode under torch.no_grad()."""
    with torch.no_grad():
        path = train_pixel_decoder(encoder, PixelDecoderConfig(**SMALL), out=tmp_path / "dec")
    assert (path / "model.safetensors").is_file()


def test_training_on_first_use_is_announced(encoder, caplog):
    import logging

    cfg = PixelDecoderConfig(**SMALL, seed=11)
    with caplog.at_level(logging.WARNING, logger="uvlm"):
        train_pixel_decoder(encoder, cfg)  # a cache miss: trained now, and said so first
    said = [r.getMessage() for r in caplog.records if "training it now" in r.getMessage()]
    assert len(said) == 1 and "min" in said[0] and "uvlm vision train --what pixel-decoder" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uvlm"):
        train_pixel_decoder(encoder, cfg)  # reused: nothing to announce
    assert not [r for r in caplog.records if "training it now" in r.getMessage()]
