"""The quickstart end to end on the fake vision source: runs, table, curves, restart skips finished runs."""

from __future__ import annotations

import json

import pytest

from _fakes import install
from uvlm.experiments.paper import TABLE_A5
from uvlm.experiments.quickstart import QuickstartConfig, format_table, run_quickstart, summarize
from uvlm.errors import UserError


def test_quickstart_runs_tabulates_plots_and_skips_finished_runs(tmp_path, monkeypatch):
    install(monkeypatch)
    q = QuickstartConfig(seeds=2, samples=32, batch_size=8, llm="debug", evals=2, questions=12, workers=1,
                         out=str(tmp_path / "qs"))
    lines: list[str] = []
    result = run_quickstart(q, log=lines.append)
    assert lines[0].startswith("quickstart: SigLIP_u, SigLIP-SigLIP")
    assert any("expected wall time" in line for line in lines[:4])
    assert result["failures"] == []
    assert len(result["runs"]) == 4
    for v in q.variants:
        row = result["summary"][v]
        assert row["weather"]["n"] == 2 and 0 <= row["weather"]["mean"] <= 100
        curves = [r["curve"] for r in result["runs"] if r["variant"] == v]
        assert all(len(c) == 2 for c in curves)
        assert all(c[0]["understanding_samples"] < c[1]["understanding_samples"] for c in curves)
    unified = [r for r in result["runs"] if r["variant"] == "SigLIP-SigLIP"]
    assert all(r["curve"][-1]["generation_samples"] > 0 for r in unified)
    out = tmp_path / "qs"
    table = (out / "table.md").read_text()
    assert "| SigLIP_u |" in table and f"{TABLE_A5['SigLIP_u'][1]:.1f}" in table
    # the unified runs' text-conditioning gap, under the table; none for understanding-only runs
    gap = result["summary"]["SigLIP-SigLIP"]["conditioning_gap"]
    assert gap["n"] == 2 and gap["min"] <= gap["mean"] <= gap["max"]
    assert "conditioning_gap" not in result["summary"]["SigLIP_u"]
    assert "SigLIP-SigLIP: vision loss" in table and "when the instructions are shuffled" in table
    assert (out / "curves.png").stat().st_size > 1000 and (out / "curves.pdf").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    # a second call finds every run finished and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert len(stamps) == 4
    again = run_quickstart(q, log=lambda s: None)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == stamps
    assert again["summary"] == result["summary"]
    # another configuration in the same folder trains its own runs beside the first ones (folders named by config hash)
    runs_before = {p.name for p in (out / "runs").iterdir()}
    other = run_quickstart(QuickstartConfig(**{**q.__dict__, "seeds": 1, "samples": 40}), log=lambda s: None)
    assert len(other["runs"]) == 2 and {p.name for p in (out / "runs").iterdir()} > runs_before


def test_summary_and_table_on_known_numbers():
    recs = [{"variant": "SigLIP_u", "final": {"vqa": {"time": t, "weather": w, "position": 100.0, "battery": 90.0,
                                                      "total": 80.0}}}
            for t, w in ((50.0, 20.0), (60.0, 40.0))]
    s = summarize(recs, ("SigLIP_u",))
    assert s["SigLIP_u"]["weather"]["mean"] == pytest.approx(30.0)
    assert s["SigLIP_u"]["weather"]["std"] == pytest.approx(14.1421, rel=1e-4)
    assert "30.0 ± 14.1 | 28.6" in format_table(s)


def test_bad_quickstart_config():
    with pytest.raises(UserError, match="unknown bias attribute"):
        QuickstartConfig(bias="colour")
    with pytest.raises(UserError, match="seeds"):
        QuickstartConfig(seeds=0)
    with pytest.raises(UserError, match="--alpha must be 0 or more"):
        QuickstartConfig(alpha=-1.0)


def test_alpha_reweighs_only_the_unified_runs():
    from uvlm.experiments.quickstart import run_configs
    from uvlm.experiments.recipe import config_id

    default = {(v, s): c for v, s, c in run_configs(QuickstartConfig(seeds=1))}
    heavy = {(v, s): c for v, s, c in run_configs(QuickstartConfig(seeds=1, alpha=24.0))}
    u, uni = ("SigLIP_u", 0), ("SigLIP-SigLIP", 0)
    assert config_id(heavy[u].to_dict()) == config_id(default[u].to_dict())  # the baseline is shared, not retrained
    assert heavy[uni].model.alpha == 24.0 and default[uni].model.alpha is None
    assert config_id(heavy[uni].to_dict()) != config_id(default[uni].to_dict())


def test_another_bias_is_named_in_the_sweep_header_and_reaches_the_data():
    from uvlm.experiments.quickstart import recipe_and_preset, run_configs

    paper, _ = recipe_and_preset(QuickstartConfig())
    assert "Table A5" in paper.reproduces
    control, _ = recipe_and_preset(QuickstartConfig(bias="weather:0.2:0.5"))
    assert "weather:0.2:0.5" in control.reproduces and "Table A5" not in control.reproduces
    bias = run_configs(QuickstartConfig(seeds=1, bias="weather:0.2:0.5"))[0][2].data.train.bias
    assert (bias.attribute, bias.vqa_share, bias.caption_share) == ("weather", 0.2, 0.5)
