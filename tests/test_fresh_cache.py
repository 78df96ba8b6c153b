"""A new user's first ``uvlm draw`` and ``uvlm eval --generation`` of a SigLIP-target run, on a fresh cache.

Both decode under ``torch.no_grad()``, and on a fresh cache the SigLIP source's first ``decode`` trains its pixel
decoder (and ``eval --generation`` trains the reader that judges the drawings). This once crashed with "element 0 of
tensors does not require grad". Here the tower is a small random SigLIP (48 px, 16 tokens) inside the real
:class:`~uvlm.vision.presets.SiglipSource`, and the artifacts' default configs are shrunk to a few steps, so the
whole path (CLI, lazy training, caching) runs in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from _fakes import tiny_config
from uvlm.cli.main import main


@pytest.fixture
def siglip_source(tmp_path, monkeypatch):
    import uvlm.train.data
    import uvlm.vision.pixel_decoder as pixel_decoder
    import uvlm.vision.reader as reader
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from uvlm.vision.presets import SiglipSource
    from uvlm.vision.siglip import SiglipTower

    torch.manual_seed(0)
    model = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, image_size=48, patch_size=12))
    weights = tmp_path / "tower.safetensors"
    weights.write_bytes(b"a stand-in for the tower's weights (its identity)")
    source = SiglipSource(SiglipTower(model), weights)
    monkeypatch.setattr(uvlm.train.data, "get_vision_source", lambda kind, name="tiny": source)

    @dataclass(frozen=True)
    class SmallDecoder(pixel_decoder.PixelDecoderConfig):
        steps: int = 3
        batch_size: int = 2
        channels: int = 16
        min_channels: int = 8
        eval_images: int = 2
        log_every: int = 1

    @dataclass(frozen=True)
    class SmallReader(reader.ReaderConfig):
        steps: int = 3
        batch_size: int = 4
        eval_images: int = 4
        log_every: int = 1
        width: int = 8
        feature_dim: int = 16

    monkeypatch.setattr(pixel_decoder, "PixelDecoderConfig", SmallDecoder)
    monkeypatch.setattr(reader, "ReaderConfig", SmallReader)
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("UVLM_CACHE", str(cache))  # nothing trained yet
    n = torch.get_num_threads()
    yield cache
    torch.set_num_threads(n)


def test_draw_and_eval_generation_on_a_fresh_cache(siglip_source, tmp_path, capsys):
    cache = siglip_source
    (tmp_path / "c.json").write_text(json.dumps(tiny_config("SigLIP-SigLIP", steps=2).to_dict()))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.json"), "--out", str(run), "--quiet"]) == 0
    assert not (cache / "pixel-decoder").exists()
    capsys.readouterr()

    # the first drawing trains the pixel decoder (inside draw's torch.no_grad()), says so first, and draws
    out = tmp_path / "out.png"
    assert main(["draw", str(run), "Draw a watch showing 3:15 with sunny weather.", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "does not require grad" not in err, err
    assert "pixel-decoder: not in the cache" in err and "training it now" in err
    assert f"wrote {out} (48x48)" in err
    from PIL import Image

    assert Image.open(out).size == (48, 48)
    assert len(list((cache / "pixel-decoder").iterdir())) == 1

    # eval --generation on a cache with no reader: trains it (announced), decodes under no_grad, reports the FID
    # (--json: the table form is not what this test is about)
    assert main(["eval", str(run), "--generation", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "reader: not in the cache" in captured.err, captured.err
    report = json.loads(captured.out)
    assert report["n"] == 2 and report["fid"]["extractor"] == "reader" and report["faithfulness"]["scores"]
    assert len(list((cache / "reader").iterdir())) == 1
    assert len(list((cache / "pixel-decoder").iterdir())) == 1  # the decoder trained by draw is reused
    # the table form: a group no drawing's instruction states prints n/a (it once crashed on None)
    assert main(["eval", str(run), "--generation", "2"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "faithfulness (reader on the drawings" in captured.out
    unstated = [k for k, v in report["faithfulness"]["scores"].items() if v is None]
    assert unstated  # 2 drawings leave some attribute unstated
    assert all(f"{k} n/a" in captured.out for k in unstated)
