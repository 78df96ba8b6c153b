"""The VQ tokenizer: interface contracts, LlamaGen VQ-16 checkpoint compatibility, training determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchmetrics.functional.image import peak_signal_noise_ratio

from uvlm.errors import UserError
from uvlm.vision.vq import VQConfig, VQTokenizer, load_llamagen, load_vq
from uvlm.vision.vq_train import VQTrainConfig, evaluate, images, train_vq

KEYS = Path(__file__).parent / "data" / "llamagen_vq_ds16_keys.json"
RES = 48  # smallest legible SmartWatch resolution; divisible by the tiny preset's downsampling (4)


@pytest.fixture(scope="module")
def tiny() -> VQTokenizer:
    torch.manual_seed(0)
    return VQTokenizer(VQConfig.tiny(resolution=RES)).eval()


@pytest.fixture(scope="module")
def watch_images() -> torch.Tensor:
    return images("vq-test", 0, RES, 0, 6)


def random_state(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in keys.items()}


# ----- interface ------------------------------------------------------------------------------------------------

def test_shapes_and_dtypes(tiny: VQTokenizer, watch_images: torch.Tensor) -> None:
    n = (RES // 4) ** 2
    assert tiny.resolution == RES and tiny.num_tokens == n and tiny.codebook_size == 1024
    ids = tiny.encode(watch_images)
    assert ids.shape == (6, n) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < tiny.codebook_size
    lat = tiny.encode_latents(watch_images)
    assert lat.shape == (6, n, 8) and lat.dtype == torch.float32
    torch.testing.assert_close(lat.norm(dim=-1), torch.ones(6, n))
    torch.testing.assert_close(lat, tiny.embed_codes(ids))
    out = tiny.decode(ids)
    assert out.shape == (6, 3, RES, RES) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_pil_and_uint8_inputs_agree(tiny: VQTokenizer, watch_images: torch.Tensor) -> None:
    u8 = (watch_images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    from uvlm.vision.base import to_pil
    assert torch.equal(tiny.encode(u8), tiny.encode(to_pil(watch_images)))


def test_bad_inputs_are_user_errors(tiny: VQTokenizer) -> None:
    with pytest.raises(UserError, match="64x64 but this model takes 48x48"):
        tiny.encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(UserError, match="tokens per image"):
        tiny.decode(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(UserError, match=r"in \[0, 1024\)"):
        tiny.decode(torch.full((1, tiny.num_tokens), 1024))
    with pytest.raises(UserError, match="not divisible"):
        VQConfig.tiny(resolution=50)


# ----- LlamaGen VQ-16 compatibility --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published() -> dict[str, list[int]]:
    return json.loads(KEYS.read_text())["keys"]


@pytest.fixture(scope="module")
def vq16_file(tmp_path_factory: pytest.TempPathFactory, published: dict[str, list[int]]) -> tuple[Path, dict]:
    state = random_state(published)
    path = tmp_path_factory.mktemp("llamagen") / "vq_ds16_c2i.pt"
    torch.save({"model": state, "steps": 1}, path)
    return path, state


def test_vq16_architecture_matches_published_keys(published: dict[str, list[int]]) -> None:
    model = VQTokenizer(VQConfig.vq16())  # about 1-2 s on one CPU core
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(own) == list(published)  # same names, same order
    assert own == published
    assert sum(p.numel() for p in model.parameters()) == 71_883_403
    assert model.num_tokens == 256 and model.codebook_size == 16384 and model.resolution == 256


def test_load_llamagen_strict(vq16_file: tuple[Path, dict]) -> None:
    path, state = vq16_file
    model = load_llamagen(path)
    own = model.state_dict()
    for k in ("encoder.conv_in.weight", "decoder.conv_blocks.3.upsample.conv.weight", "quantize.embedding.weight",
              "quantize.codebook_used", "post_quant_conv.bias"):
        assert torch.equal(own[k], state[k])
    assert not model.training


@pytest.mark.parametrize("wrap", ["ema", "model", "state_dict", "bare"])
def test_load_llamagen_accepts_wrappers(tmp_path: Path, wrap: str) -> None:
    config = VQConfig.tiny(resolution=RES)
    state = random_state({k: list(v.shape) for k, v in VQTokenizer(config).state_dict().items()}, seed=1)
    path = tmp_path / "ckpt.pt"
    torch.save(state if wrap == "bare" else {wrap: state}, path)
    model = load_llamagen(path, config)
    assert torch.equal(model.state_dict()["quantize.embedding.weight"], state["quantize.embedding.weight"])


def test_load_llamagen_without_usage_buffer(tmp_path: Path) -> None:
    config = VQConfig.tiny(resolution=RES)
    state = VQTokenizer(config).state_dict()
    del state["quantize.codebook_used"]
    torch.save({"model": state}, tmp_path / "c.pt")
    load_llamagen(tmp_path / "c.pt", config)


def test_mismatched_keys_are_listed(tmp_path: Path) -> None:
    config = VQConfig.tiny(resolution=RES)
    state = dict(VQTokenizer(config).state_dict())
    del state["encoder.conv_in.bias"]
    state["encoder.extra.weight"] = torch.zeros(1)
    state["quant_conv.weight"] = torch.zeros(8, 31, 1, 1)
    torch.save({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(UserError) as e:
        load_llamagen(tmp_path / "bad.pt", config)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("missing keys: encoder.conv_in.bias", "unexpected keys: encoder.extra.weight",
                 "quant_conv.weight (8, 31, 1, 1)"):
        assert part in msg


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        load_llamagen(junk)
    with pytest.raises(UserError, match="does not exist"):
        load_llamagen(tmp_path / "missing.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="not a state dict"):
        load_llamagen(tmp_path / "list.pt")
    torch.save({"model": {"a": 1}}, tmp_path / "nontensor.pt")
    with pytest.raises(UserError, match="not a state dict"):
        load_llamagen(tmp_path / "nontensor.pt")
    with pytest.raises(UserError, match="not a uvlm vision checkpoint"):
        load_vq(tmp_path)


# ----- training -----------------------------------------------------------------------------------------------------

def small_run(**kw) -> VQTrainConfig:
    base = dict(model=VQConfig.tiny(resolution=RES), steps=3, batch_size=2, eval_images=0, log_every=100,
                warmup_steps=1, restart_every=2)
    return VQTrainConfig(**{**base, **kw})


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = load_file(str(train_vq(small_run(), tmp_path / "a", log=None) / "model.safetensors"))
    b = load_file(str(train_vq(small_run(), tmp_path / "b", log=None) / "model.safetensors"))
    c = load_file(str(train_vq(small_run(seed=1), tmp_path / "c", log=None) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.conv_in.weight"], c["encoder.conv_in.weight"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["kind"] == "vq" and config["model"]["resolution"] == RES


def test_cache_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path))
    lines: list[str] = []
    first = train_vq(small_run(steps=1), log=lines.append)
    second = train_vq(small_run(steps=1, log_every=7), log=lines.append)  # logging cadence is not part of the key
    assert first == second and first.is_relative_to(tmp_path)
    assert "reusing" in lines[-1]


def per_image_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))


def test_brief_training_codes_carry_the_image(tmp_path: Path) -> None:
    """After 60 steps (a few seconds) the codes of image i decode closer to image i than to other images, and far
    better than an untrained tokenizer's round trip. (Beating the mean image takes minutes: see the slow test.)"""
    lines: list[str] = []
    config = small_run(model=VQConfig.tiny(resolution=RES, ch=8, z_channels=16), steps=60, batch_size=8, lr=3e-3,
                       warmup_steps=5, restart_every=10, eval_images=8, log_every=30)
    folder = train_vq(config, tmp_path / "m", log=lines.append)
    assert any(line.startswith("vq step 30/60") and "psnr" in line and "img/s" in line for line in lines)
    info = json.loads((folder / "info.json").read_text())
    assert info["code_usage"] > 0 and info["minutes"] > 0
    model = load_vq(folder)
    held = images("vq-test-heldout", 3, RES, 0, 16)
    rec = model.decode(model.encode(held))
    own = float(per_image_psnr(rec, held).mean())
    other = float(per_image_psnr(rec.roll(1, 0), held).mean())
    torch.manual_seed(0)
    untrained = evaluate(VQTokenizer(model.config).eval(), held)["psnr"]
    assert own > other + 0.4, (own, other)
    assert own > untrained + 3.0, (own, untrained)


@pytest.mark.slow
def test_training_beats_mean_image(tmp_path: Path) -> None:
    """About 3 minutes: 250 steps of the tiny preset beat predicting the mean image on held-out images."""
    folder = train_vq(small_run(steps=250, batch_size=8, lr=2e-3, warmup_steps=20, restart_every=10, eval_images=0),
                      tmp_path / "m", log=None)
    m = evaluate(load_vq(folder), images("vq-test-heldout", 3, RES, 0, 64))
    assert m["psnr"] > m["psnr_mean_image"] + 1.0, m
