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
    q = QuickstartConfig(seeds=2, samples=32, llm="debug", evals=2, questions=12, final_questions=14, workers=1,
                         arms=("SigLIP_u", "SigLIP-SigLIP alpha=auto", "SigLIP_u bias=none"), out=str(tmp_path / "qs"))
    lines: list[str] = []
    result = run_quickstart(q, log=lines.append)
    assert lines[0].startswith("quickstart: SigLIP_u, SigLIP-SigLIP alpha=auto, SigLIP_u bias=none")
    assert any("expected wall time" in line for line in lines[:4])
    assert result["failures"] == []
    assert len(result["runs"]) == 6
    for v in q.arms:
        row = result["summary"][v]
        assert row["weather"]["n"] == 2 and 0 <= row["weather"]["mean"] <= 100
        curves = [r["curve"] for r in result["runs"] if r["arm"] == v]
        assert all(len(c) == 2 for c in curves)
        assert all(c[0]["understanding_samples"] < c[1]["understanding_samples"] for c in curves)
    # the final evaluation uses final_questions, the curve's earlier points questions
    preds = sorted((tmp_path / "qs" / "runs").glob("SigLIP_u-seed0-*/predictions/step-*.jsonl"))
    assert [len(p.read_text().splitlines()) for p in preds][-1] == 14
    unified = [r for r in result["runs"] if r["arm"] == "SigLIP-SigLIP alpha=auto"]
    assert all(r["curve"][-1]["generation_samples"] > 0 for r in unified)
    # the arms of one seed see the same understanding samples: equal counts at every evaluation
    u = [r for r in result["runs"] if r["arm"] == "SigLIP_u"]
    assert [p["understanding_samples"] for p in u[0]["curve"]][-1] == unified[0]["curve"][-1]["understanding_samples"]
    out = tmp_path / "qs"
    table = (out / "table.md").read_text()
    assert "| SigLIP_u |" in table and f"{TABLE_A5['SigLIP_u'][1]:.1f}" in table
    # the unified runs' text-conditioning gap and drawings' weather, under the table; none for understanding-only runs
    gap = result["summary"]["SigLIP-SigLIP alpha=auto"]["conditioning_gap"]
    assert gap["n"] == 2 and gap["min"] <= gap["mean"] <= gap["max"]
    assert "conditioning_gap" not in result["summary"]["SigLIP_u"]
    assert "when the instructions are shuffled" in table and "icon probe reads the requested weather" in table
    # the pre-registered verdict (tiny runs never meet the baseline criteria: inconclusive, and it says why)
    assert result["verdict"]["arms"]["alpha=auto"]["verdict"] == "inconclusive"
    assert "**F3: inconclusive.**" in table and "fails U1" in table
    assert (out / "curves.png").stat().st_size > 1000 and (out / "curves.pdf").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    # a second call finds every run finished and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert len(stamps) == 6
    again = run_quickstart(q, log=lambda s: None)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == stamps
    assert again["summary"] == result["summary"]
    # a rerun that trains nothing keeps the minutes of the invocation that did the work
    assert again["invocations"] == 2 and again["wall_minutes"] < result["wall_minutes"]
    assert again["wall_minutes_all_invocations"] >= result["wall_minutes"] - 0.01
    # another configuration in the same folder trains its own runs beside the first ones (folders named by config hash)
    runs_before = {p.name for p in (out / "runs").iterdir()}
    other = run_quickstart(QuickstartConfig(**{**q.__dict__, "seeds": 1, "samples": 40, "arms": ("SigLIP_u",)}),
                           log=lambda s: None)
    assert len(other["runs"]) == 1 and {p.name for p in (out / "runs").iterdir()} > runs_before


def test_summary_and_table_on_known_numbers():
    recs = [{"arm": "SigLIP_u", "final": {"vqa": {"time": t, "weather": w, "position": 100.0, "battery": 90.0,
                                                  "total": 80.0}}}
            for t, w in ((50.0, 20.0), (60.0, 40.0))]
    s = summarize(recs, ("SigLIP_u",))
    assert s["SigLIP_u"]["weather"]["mean"] == pytest.approx(30.0)
    assert s["SigLIP_u"]["weather"]["std"] == pytest.approx(14.1421, rel=1e-4)
    assert "30.0 ± 14.1 | 28.6" in format_table(s)
    # the paper's row goes beside the paper's setting only: alpha = 1, not the automatic balance
    s2 = {"SigLIP-SigLIP alpha=1": s["SigLIP_u"], "SigLIP-SigLIP alpha=auto": s["SigLIP_u"]}
    t = format_table(s2).splitlines()
    assert f"| {TABLE_A5['SigLIP-SigLIP'][1]:.1f}" in t[2] and "30.0 ± 14.1 | -" in t[3]


def test_bad_quickstart_config():
    with pytest.raises(UserError, match="unknown arm 'SigLIP-SigLIP alpha=24'"):
        QuickstartConfig(arms=("SigLIP-SigLIP alpha=24",))
    with pytest.raises(UserError, match="seeds"):
        QuickstartConfig(seeds=0)


def test_the_quickstart_is_the_transfer_study_recipe_at_the_cpu_preset():
    from uvlm.experiments.quickstart import ARMS, run_configs
    from uvlm.experiments.recipe import config_id, expand, load_preset, load_recipe

    qs = {(a, s): config_id(c.to_dict()) for a, s, c in run_configs(QuickstartConfig(seeds=2, arms=ARMS))}
    recipe = {(r.group, r.seed): r.id for r in expand(load_recipe("transfer-study"), load_preset("cpu"), 2)}
    assert qs == recipe  # the same runs: a quickstart's runs count for the recipe and the reverse
    configs = {(a, s): c for a, s, c in run_configs(QuickstartConfig(seeds=1, arms=ARMS))}
    assert configs[("SigLIP-SigLIP alpha=0", 0)].model.alpha == 0.0
    assert configs[("SigLIP-SigLIP alpha=auto", 0)].balance.rule == "grad-norm"
    assert configs[("SigLIP_u bias=none", 0)].data.train.bias is None
    assert configs[("SigLIP_u", 0)].data.train.bias.vqa_share == 0.05
