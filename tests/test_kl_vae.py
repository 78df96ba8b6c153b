"""The KL-VAE: interface contracts, MAR KL-16 checkpoint compatibility, the scale factor, training and caching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uvlm.errors import UserError
from uvlm.vision.artifacts import load_artifact
from uvlm.vision.kl_vae import (KL16_SCALE_FACTOR, KLVAE, KLVAEConfig, KLVAETrainConfig, evaluate, load_kl16,
                                load_kl_vae, published_keys, train_kl_vae)
from uvlm.vision.vq_train import images

KEYS = Path(__file__).parent / "data" / "mar_kl16_keys.json"
RES = 48  # smallest legible SmartWatch resolution; divisible by the tiny preset's downsampling (4)


@pytest.fixture(scope="module")
def tiny() -> KLVAE:
    torch.manual_seed(0)
    return KLVAE(KLVAEConfig.tiny(resolution=RES)).eval()


@pytest.fixture(scope="module")
def watch_images() -> torch.Tensor:
    return images("kl-vae-test", 0, RES, 0, 4)


def random_state(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in keys.items()}


def own_keys(config: KLVAEConfig) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in KLVAE(config).state_dict().items()}


# ----- interface ------------------------------------------------------------------------------------------------

def test_shapes_range_and_scale(tiny: KLVAE, watch_images: torch.Tensor) -> None:
    n = (RES // 4) ** 2
    assert tiny.num_tokens == n and tiny.embed_dim == 8 and tiny.config.grid == RES // 4
    lat = tiny.encode_latents(watch_images)
    assert lat.shape == (4, n, 8) and lat.dtype == torch.float32
    out = tiny.decode_latents(lat)
    assert out.shape == (4, 3, RES, RES) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # tokens are the raster-ordered posterior means times the scale factor; decoding divides it back out
    mean, _ = tiny.moments(tiny.preprocess(watch_images))
    torch.testing.assert_close(lat, mean.flatten(2).transpose(1, 2))
    scaled = KLVAE(tiny.config, scale_factor=0.25)
    scaled.load_state_dict(tiny.state_dict())
    scaled.eval()
    lat4 = scaled.encode_latents(watch_images)
    torch.testing.assert_close(lat4, 0.25 * lat)
    torch.testing.assert_close(scaled.decode_latents(lat4), out)


def test_posterior_samples_follow_the_generator(tiny: KLVAE, watch_images: torch.Tensor) -> None:
    def draw(seed: int) -> torch.Tensor:
        return tiny.encode_latents(watch_images, sample=True, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert torch.equal(tiny.encode_latents(watch_images), tiny.encode_latents(watch_images))


def test_bad_inputs_are_user_errors(tiny: KLVAE) -> None:
    with pytest.raises(UserError, match=r"latent tokens must be \(B, 144, 8\), got \(2, 144, 4\)"):
        tiny.decode_latents(torch.zeros(2, 144, 4))
    with pytest.raises(UserError, match="this model takes 48x48"):
        tiny.encode_latents(torch.rand(1, 3, 64, 64))
    with pytest.raises(UserError, match="scale_factor must be a positive number"):
        KLVAE(KLVAEConfig.tiny(), scale_factor=0.0)


@pytest.mark.parametrize("bad, words", [
    (dict(embed_dim=0), "embed_dim must be a positive integer"),
    (dict(resolution=50), "not divisible by the downsampling factor 4"),
    (dict(attn_levels=(3,)), r"attn_levels \[3\] are not levels"),
    (dict(norm_groups=5), "not divisible by norm_groups=5"),
    (dict(dropout=1.0), "dropout must be in"),
])
def test_bad_model_configs(bad: dict, words: str) -> None:
    with pytest.raises(UserError, match=words) as e:
        KLVAEConfig.tiny(**bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad, words", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(batch_size=-1), "batch_size must be a positive integer"),
    (dict(kl_weight=-1e-4), "loss weights must be >= 0"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(eval_split="vision-pretrain"), "splits must differ"),
    (dict(scale_images=0), "scale_images must be a positive integer"),
])
def test_bad_train_configs(bad: dict, words: str) -> None:
    with pytest.raises(UserError, match=words):
        KLVAETrainConfig(**bad)


def test_config_round_trips() -> None:
    c = KLVAETrainConfig(model=KLVAEConfig.tiny(resolution=RES), steps=5)
    assert KLVAETrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(UserError, match="unknown KL-VAE config key"):
        KLVAEConfig.from_dict({**KLVAEConfig.tiny().to_dict(), "z_channels": 4})
    with pytest.raises(UserError, match="unknown KL-VAE preset 'kl8'"):
        KLVAEConfig.preset("kl8")


# ----- MAR KL-16 compatibility ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published() -> dict[str, list[int]]:
    return json.loads(KEYS.read_text())["keys"]


def test_kl16_architecture_matches_published_keys(published: dict[str, list[int]]) -> None:
    own = published_keys()
    assert list(own) == list(published)  # same names, same order
    assert own == published
    with torch.device("meta"):
        model = KLVAE(KLVAEConfig.kl16())
    assert sum(p.numel() for p in model.parameters()) == 66_456_019
    assert model.num_tokens == 256 and model.embed_dim == 16 and model.resolution == 256


def test_load_kl16_strict(tmp_path: Path, published: dict[str, list[int]]) -> None:
    """A random state dict with the published keys and shapes loads exactly (LDM ``loss.*`` entries are dropped)."""
    state = random_state(published)
    path = tmp_path / "kl16.ckpt"
    torch.save({"model": {**state, "loss.discriminator.main.0.weight": torch.zeros(4, 3, 4, 4)}}, path)
    model = load_kl16(path)
    own = model.state_dict()
    for k in ("encoder.conv_in.weight", "encoder.down.4.attn.1.proj_out.bias", "decoder.up.1.upsample.conv.weight",
              "quant_conv.weight", "post_quant_conv.bias"):
        assert torch.equal(own[k], state[k])
    assert not model.training and model.scale_factor == KL16_SCALE_FACTOR
    assert all(v.device.type == "cpu" for v in own.values())


@pytest.mark.parametrize("wrap", ["model", "state_dict", "bare"])
def test_load_kl16_wrappers_and_forward(tmp_path: Path, tiny: KLVAE, watch_images: torch.Tensor, wrap: str) -> None:
    state = tiny.state_dict()
    torch.save(state if wrap == "bare" else {wrap: state}, tmp_path / "c.ckpt")
    model = load_kl16(tmp_path / "c.ckpt", KLVAEConfig.tiny(resolution=RES), scale_factor=1.0)
    torch.testing.assert_close(model.encode_latents(watch_images), tiny.encode_latents(watch_images))


def test_wrong_keys_are_one_line_user_errors(tmp_path: Path) -> None:
    config = KLVAEConfig.tiny(resolution=RES)
    state = random_state(own_keys(config), seed=1)
    del state["encoder.conv_in.bias"]
    state["encoder.extra.weight"] = torch.zeros(1)
    state["quant_conv.weight"] = torch.zeros(16, 15, 1, 1)
    torch.save({"model": state}, tmp_path / "bad.ckpt")
    with pytest.raises(UserError) as e:
        load_kl16(tmp_path / "bad.ckpt", config)
    msg = str(e.value)
    assert "\n" not in msg and "does not fit KLVAE" in msg
    for part in ("missing keys: encoder.conv_in.bias", "unexpected keys: encoder.extra.weight",
                 "quant_conv.weight (16, 15, 1, 1)"):
        assert part in msg
    # a LlamaGen VQ-16 state dict is not a KL-16 one
    vq = json.loads((Path(__file__).parent / "data" / "llamagen_vq_ds16_keys.json").read_text())["keys"]
    torch.save({"model": {k: torch.zeros(1) for k in vq}}, tmp_path / "vq.pt")
    with pytest.raises(UserError, match="missing keys: .*unexpected keys: "):
        load_kl16(tmp_path / "vq.pt")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        load_kl16(junk)
    with pytest.raises(UserError, match="does not exist"):
        load_kl16(tmp_path / "missing.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    with pytest.raises(UserError, match="not a state dict"):
        load_kl16(tmp_path / "list.ckpt")
    torch.save({"model": {"a": 1}}, tmp_path / "nontensor.ckpt")
    with pytest.raises(UserError, match="not a state dict"):
        load_kl16(tmp_path / "nontensor.ckpt")
    with pytest.raises(UserError, match="not a uvlm vision checkpoint"):
        load_kl_vae(tmp_path)


# ----- training, artifacts, cache -----------------------------------------------------------------------------------

def small_run(**kw) -> KLVAETrainConfig:
    base = dict(model=KLVAEConfig.tiny(resolution=RES), steps=3, batch_size=2, eval_images=0, scale_images=4,
                log_every=100, warmup_steps=1)
    return KLVAETrainConfig(**{**base, **kw})


def test_training_is_deterministic_and_saves_an_artifact(tmp_path: Path, one_thread) -> None:
    c = small_run()
    a = train_kl_vae(c, out=tmp_path / "a", log=None)
    b = train_kl_vae(c, out=tmp_path / "b", log=None)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    other = train_kl_vae(small_run(seed=1), out=tmp_path / "c", log=None)
    assert (other / "model.safetensors").read_bytes() != (a / "model.safetensors").read_bytes()
    _, config = load_artifact(a, kind="kl-vae")
    assert config["model"] == c.model.to_dict() and config["train"] == c.to_dict()
    info = json.loads((a / "info.json").read_text())
    assert config["scale_factor"] == info["scale_factor"] > 0
    model = load_kl_vae(a)
    assert model.scale_factor == config["scale_factor"] and not model.training
    state = load_file(str(a / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the scale factor brings the held-out latents to unit standard deviation
    held = images(c.eval_split, c.data_seed, RES, 0, c.scale_images)
    assert abs(float(model.encode_latents(held).std()) - 1.0) < 1e-4


def test_cache_reuses_the_artifact(one_thread) -> None:
    c = small_run(steps=1)
    lines: list[str] = []
    first = train_kl_vae(c, log=lines.append)
    assert "kl-vae" in first.parts and not any("reusing" in line for line in lines)
    again = train_kl_vae(KLVAETrainConfig.from_dict({**c.to_dict(), "log_every": 7}), log=lines.append)
    assert again == first and "reusing cached VAE" in lines[-1]


def test_a_short_training_improves_the_round_trip(tmp_path: Path, one_thread) -> None:
    """24 steps of 2 images (about 5 s): held-out PSNR rises well above the untrained model's."""
    c = small_run(steps=24, eval_images=16, lr=3e-3, warmup_steps=2)
    held = images(c.eval_split, c.data_seed, RES, 0, 16)
    torch.manual_seed(c.seed)
    untrained = evaluate(KLVAE(c.model), held)
    out = train_kl_vae(c, out=tmp_path / "short", log=None)
    info = json.loads((out / "info.json").read_text())
    assert info["psnr"] > untrained["psnr"] + 3.0, (untrained, info)
    trained = evaluate(load_kl_vae(out), held)
    assert abs(trained["psnr"] - info["psnr"]) < 1e-3  # the saved weights are the evaluated ones
