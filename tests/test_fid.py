"""FID through torchmetrics, the SciPy reference, and the extractors (reader features, a TorchScript Inception)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uvlm.errors import UserError
from uvlm.eval.fid import (INCEPTION_FEATURES, INCEPTION_SIZE, SIGNED_RANGE, STYLEGAN_RANGE, compute_fid,
                           frechet_distance, inception_extractor, reader_extractor)
from uvlm.vision.reader import ReaderConfig, SmartWatchReader


class RandomFeatures(nn.Module):
    """A fixed random conv + ReLU + 2x2 average pooling: float (B, 3, 32, 32) in [0, 1] -> (B, 32)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 4, 4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.num_features = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x * 2 - 1))).flatten(1)


def _images(n: int, seed: int) -> torch.Tensor:
    """Smooth random images (a random 8x8 grid upsampled), so the features have structure."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)


def test_torchmetrics_fid_equals_the_scipy_reference():
    ext = RandomFeatures()
    real, fake = _images(100, 1), (_images(110, 2) * 0.8 + 0.1)
    result = compute_fid(real, fake, ext, batch_size=32)
    with torch.no_grad():
        reference = frechet_distance(ext(real), ext(fake))
    assert result["fid"] == pytest.approx(reference, rel=1e-3)
    assert result["fid"] > 0
    assert (result["n_real"], result["n_fake"], result["num_features"]) == (100, 110, 32)
    assert result["extractor"] == "RandomFeatures"  # a module without a name reports its class


def test_frechet_distance_of_one_dimensional_gaussians_has_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, size=(400, 1)), rng.normal(-0.5, 0.5, size=(300, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_a_set_against_itself_is_zero_and_a_shifted_set_is_not():
    ext = RandomFeatures()
    real = _images(100, 3)
    same = compute_fid(real, real, ext)["fid"]
    other_draw = compute_fid(real, _images(100, 4), ext)["fid"]
    shifted = compute_fid(real, (real + 0.3).clamp(0, 1), ext)["fid"]
    assert abs(same) < 1e-4 * shifted
    assert shifted > other_draw > 0  # a systematic shift is further than a fresh draw of the same distribution


def test_bad_fid_inputs_are_user_errors():
    ext = RandomFeatures()
    with pytest.raises(UserError, match="at least 2"):
        compute_fid(_images(1, 0), _images(5, 1), ext)
    with pytest.raises(UserError, match="float"):
        compute_fid((_images(4, 0) * 255).to(torch.uint8), _images(4, 1), ext)
    with pytest.raises(UserError, match="num_features"):
        compute_fid(_images(4, 0), _images(4, 1), nn.Identity())


def test_reader_extractor_is_the_reader_penultimate_features():
    reader = SmartWatchReader(ReaderConfig(resolution=48, width=4, feature_dim=16))
    ext = reader_extractor(reader)
    assert ext.num_features == 16
    x = _images(6, 5)  # 32 px: resized to the reader's 48 px
    assert ext(x).shape == (6, 16)
    result = compute_fid(_images(20, 6), _images(20, 7), ext, batch_size=8)
    assert result["extractor"] == "reader" and np.isfinite(result["fid"])


# ----- the Inception path --------------------------------------------------------------------------------------------
class RangeProbe(nn.Module):
    """Features that expose the input: per image its min and max value (repeated to 2048), and it insists on 299 px."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2] == 299 and x.shape[3] == 299
        flat = x.flatten(1)
        return torch.stack([flat.min(1).values, flat.max(1).values], 1).repeat(1, 1024)


class StyleGANProbe(nn.Module):
    """The StyleGAN export's signature: logits by default, pool features with ``return_features=True``."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        flat = img.flatten(1)
        feats = torch.stack([flat.min(1).values, flat.max(1).values], 1).repeat(1, 1024)
        if return_features:
            return feats
        return feats[:, :1008]


class TinyInception(nn.Module):
    """A small random network with the Inception interface: (N, 3, 299, 299) -> (N, 2048)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 13, 13)
        self.proj = nn.Linear(16, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class WrongWidth(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (N, 3)


def _script(module: nn.Module, path) -> str:
    torch.jit.script(module.eval()).save(str(path))
    return str(path)


def test_inception_weights_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(UserError, match="not found.*nothing is downloaded"):
        inception_extractor(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="is a directory"):
        inception_extractor(tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("not a network\n")
    with pytest.raises(UserError, match="not a TorchScript module.*notes.pt|notes.pt.*not a TorchScript module"):
        inception_extractor(text, trust=True)
    state = tmp_path / "state_dict.pt"
    torch.save(TinyInception().state_dict(), state)  # a plain checkpoint, not TorchScript
    with pytest.raises(UserError, match="not a TorchScript module"):
        inception_extractor(state, trust=True)
    wrong = _script(WrongWidth(), tmp_path / "wrong.pt")
    with pytest.raises(UserError, match=r"wrong\.pt.*\(1, 3\).*\(1, 2048\)"):
        inception_extractor(wrong, trust=True)
    with pytest.raises(UserError) as info:
        inception_extractor(tmp_path / "missing.pt")
    assert "\n" not in str(info.value) and "missing.pt" in str(info.value)


def test_a_tiny_torchscript_inception_loads_and_gives_a_finite_fid(tmp_path):
    ext = inception_extractor(_script(TinyInception(), tmp_path / "tiny.pt"), trust=True)
    assert ext.num_features == INCEPTION_FEATURES
    result = compute_fid(_images(12, 8), _images(12, 9) * 0.5, ext, batch_size=6)
    assert result["extractor"] == "inception-v3" and np.isfinite(result["fid"]) and result["fid"] > 0
    assert result["num_features"] == 2048


def test_only_known_or_trusted_inception_files_are_loaded(tmp_path, monkeypatch):
    """torch.jit.load runs the code a TorchScript file carries: a file whose digest is not a known Inception export is
    refused (one line, with its digest and the flag that overrides) before anything of it is loaded."""
    import uvlm.eval.fid as fid
    from uvlm.io import sha256_file

    path = _script(TinyInception(), tmp_path / "tiny.pt")
    loads = []
    monkeypatch.setattr(fid.torch.jit, "load", lambda *a, **k: loads.append(a) or pytest.fail("loaded"))
    with pytest.raises(UserError) as info:
        inception_extractor(path)
    msg = str(info.value)
    assert "not a known Inception-v3 file" in msg and sha256_file(path)[:16] in msg
    assert "--trust-inception-file" in msg and "\n" not in msg and not loads
    monkeypatch.undo()
    assert inception_extractor(path, trust=True).num_features == INCEPTION_FEATURES
    monkeypatch.setitem(fid.KNOWN_INCEPTION_SHA256, sha256_file(path), "the tiny test network")
    assert inception_extractor(path).num_features == INCEPTION_FEATURES  # a known digest needs no trust
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in fid.KNOWN_INCEPTION_SHA256)


@pytest.mark.parametrize("probe, expected", [(RangeProbe(), SIGNED_RANGE), (StyleGANProbe(), STYLEGAN_RANGE)])
def test_images_reach_the_network_resized_and_in_its_input_range(tmp_path, probe, expected):
    ext = inception_extractor(_script(probe, tmp_path / "probe.pt"), trust=True)
    black, white = torch.zeros(1, 3, 48, 48), torch.ones(1, 3, 48, 48)
    feats = ext(torch.cat([black, white]))  # 48 px in; the probe asserts 299 px
    assert feats.shape == (2, INCEPTION_FEATURES)
    assert feats[0, 0].item() == pytest.approx(expected[0]) and feats[1, 1].item() == pytest.approx(expected[1])
    assert INCEPTION_SIZE == 299
