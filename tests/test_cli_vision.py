"""`uvlm vision`: train reuses the cache, info describes an artifact, bad input is one line and exit 2."""

from __future__ import annotations

import json

import pytest

import uvlm.vision.reader as reader_mod
from uvlm.cli.main import main
from uvlm.vision.reader import ReaderConfig, train_reader

TINY = ReaderConfig(steps=2, batch_size=8, eval_images=16, log_every=100)


def test_train_reuses_cached_artifact_and_info_describes_it(monkeypatch, capsys):
    calls = []
    real_fit = reader_mod.fit_reader

    def counting_fit(config):
        calls.append(config)
        return real_fit(config)

    monkeypatch.setattr(reader_mod, "fit_reader", counting_fit)
    # `uvlm vision train --what reader` trains the default config; make the default a 2-step one for the test
    monkeypatch.setattr(reader_mod, "train_reader", lambda config=None, out=None: train_reader(config or TINY, out))
    assert main(["vision", "train", "--what", "reader"]) == 0
    first = capsys.readouterr().out
    assert main(["vision", "train", "--what", "reader"]) == 0
    second = capsys.readouterr().out
    assert len(calls) == 1, "the second call must reuse the cached artifact"
    folder = first.split(": ", 1)[1].split(" (")[0]
    assert folder == second.split(": ", 1)[1].split(" (")[0]

    assert main(["vision", "info", folder, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "reader" and info["parameters"] > 1000
    assert main(["vision", "info", folder]) == 0
    assert "reader artifact" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["vision", "info", "/nonexistent/folder"], "not a uvlm vision checkpoint folder"),
    (["vision", "train", "--preset", "paper"], "unknown vision preset"),
    (["vision", "train", "--what", "clip"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_info_on_a_corrupt_artifact(tmp_path, capsys):
    folder = train_reader(TINY, tmp_path / "reader")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    capsys.readouterr()  # training progress lines are not part of the error
    assert main(["vision", "info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and err.count("\n") == 1


def test_the_kl_vae_is_trained_only_when_named(monkeypatch, capsys):
    import uvlm.vision.kl_vae as kl_mod
    from uvlm.cli.vision import ARTIFACTS

    assert "kl-vae" not in ARTIFACTS  # not part of 'all'
    tiny = kl_mod.KLVAETrainConfig(steps=2, batch_size=2, scale_images=4, eval_images=0, log_every=100)
    real = kl_mod.train_kl_vae
    monkeypatch.setattr(kl_mod, "train_kl_vae", lambda config=None, out=None, log=None: real(config or tiny, out, log))
    assert main(["vision", "train", "--what", "kl-vae"]) == 0
    folder = capsys.readouterr().out.split(": ", 1)[1].split(" (")[0]
    assert main(["vision", "info", folder, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "kl-vae"
