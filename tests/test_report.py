"""Sweep results and reports: aggregation over seeds, results files, report.md beside the paper, figures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from uvlm.experiments.results import metric_bounds

from uvlm.errors import UserError
from uvlm.experiments.paper import TABLE_A3, TABLE_A5, paper_table
from uvlm.experiments.report import ReportSpec, write_report
from uvlm.experiments.results import aggregate, aggregate_curves, read_results_json, write_results
from uvlm.experiments.stats import format_summary, summarize

ATTRS = ("time", "weather", "position", "battery", "total")
GROUPS = ("SigLIP_u", "SigLIP-SigLIP", "SigLIP-VQ")


def run(group, seed, rng, *, labels=None, extractor="reader", fid=True, points=4, status="done", decoder=None):
    """A synthetic run record with random scores (the schema the runner writes)."""
    final = {"vqa": {a: float(rng.uniform(20, 100)) for a in ATTRS}}
    if fid:
        final["fid"] = {"fid": float(rng.uniform(100, 200)), "extractor": extractor}
        if decoder:
            final["fid"]["decoder"] = decoder
        final["faithfulness"] = {a: float(rng.uniform(0, 100)) for a in ATTRS}
    curve = [{"step": 10 * (i + 1), "understanding_samples": 100 * (i + 1) + seed, "generation_samples": 50 * (i + 1),
              "vqa": {a: float(rng.uniform(0, 100)) for a in ATTRS}} for i in range(points)]
    return {"id": f"{group}/{seed}", "recipe": "test", "group": group,
            "labels": {"variant": group, "bias": "weather", **(labels or {})}, "seed": seed, "status": status,
            "error": "CUDA out of memory" if status == "failed" else None, "wall_seconds": 1.0,
            "final": final, "curve": curve}


@pytest.fixture
def sweep():
    """3 groups x 3 finished seeds with curves, plus one failed run with wild numbers."""
    rng = np.random.default_rng(7)
    records = [run(g, s, rng, fid=g != "SigLIP_u") for g in GROUPS for s in range(3)]
    failed = run("SigLIP-SigLIP", 3, rng, status="failed")
    failed["final"]["vqa"] = {a: 1000.0 for a in ATTRS}
    records.insert(4, failed)
    return records


def finals(records, group, path):
    sec, key = path.split(".")
    return [r["final"][sec][key] for r in records if r["group"] == group and r["status"] == "done"]


def test_aggregate_excludes_failed_runs(sweep):
    rows = aggregate(sweep)
    assert [r.group for r in rows] == list(GROUPS)
    row = rows[1]
    assert row.n_done == 3 and row.seeds == (0, 1, 2)
    assert [f.id for f in row.failed] == ["SigLIP-SigLIP/3"] and row.failed[0].error == "CUDA out of memory"
    for path in ("vqa.weather", "vqa.total", "fid.fid", "faithfulness.total"):
        assert row.metrics[path] == summarize(finals(sweep, "SigLIP-SigLIP", path), bounds=metric_bounds(path))
    assert row.metrics["vqa.total"].mean < 100  # the failed run's 1000s stayed out
    assert row.extractor("fid.fid") == "reader" and row.extractor("vqa.total") is None
    assert row.labels == {"variant": "SigLIP-SigLIP", "bias": "weather"}
    assert "fid.fid" not in rows[0].metrics  # u-only runs have no FID


def test_aggregate_refuses_bad_sweeps(sweep):
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match="disagree on fid.extractor"):
        aggregate([run("VQ-VQ", 0, rng, extractor="reader"), run("VQ-VQ", 1, rng, extractor="inception")])
    with pytest.raises(UserError, match="appears twice"):
        aggregate([sweep[0], sweep[0]])
    with pytest.raises(UserError, match="no group"):
        aggregate([{"id": "x", "status": "done"}])


def test_results_files_parse_back(sweep, tmp_path):
    paths = write_results(tmp_path, sweep, "transfer-weather")
    assert [p.name for p in paths] == ["results.csv", "results.json", "results.md"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    rows = aggregate(sweep)

    lines = list(csv.DictReader(paths[0].open()))
    assert len(lines) == sum(len(r.metrics) for r in rows)
    assert {"group", "variant", "bias", "metric", "extractor", "n", "mean", "std", "ci95_low", "ci95_high"} <= set(
        lines[0])
    by_key = {(x["group"], x["metric"]): x for x in lines}
    for r in rows:
        for path, s in r.metrics.items():
            line = by_key[(r.group, path)]
            assert int(line["n"]) == s.n
            assert float(line["mean"]) == pytest.approx(s.mean)
            assert float(line["ci95_high"]) == pytest.approx(s.ci_high)
            assert line["extractor"] == ("reader" if path == "fid.fid" else "")
            assert int(line["n_failed"]) == len(r.failed)

    back = read_results_json(paths[1])
    assert [r.group for r in back] == [r.group for r in rows]
    for a, b in zip(back, rows):
        assert a.metrics.keys() == b.metrics.keys() and a.failed == b.failed
        assert all(a.metrics[k].mean == pytest.approx(b.metrics[k].mean) for k in a.metrics)
    doc = json.loads(paths[1].read_text())
    assert doc["recipe"] == "transfer-weather"
    assert [c["group"] for c in doc["curves"]["vqa.weather"]] == list(GROUPS)

    md = paths[2].read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(GROUPS)  # header + one line per group
    siglip = next(ln for ln in table if ln.startswith("| SigLIP-SigLIP |"))
    assert format_summary(rows[1].metrics["vqa.weather"]) in siglip
    assert "SigLIP-SigLIP/3" in md and "CUDA out of memory" in md


def test_single_seed_renders_na(tmp_path):
    rng = np.random.default_rng(1)
    paths = write_results(tmp_path, [run("VQ-VQ", 0, rng)], "one-seed")
    line = next(x for x in csv.DictReader(paths[0].open()) if x["metric"] == "vqa.total")
    assert line["n"] == "1" and line["std"] == "" and line["ci95_low"] == ""
    assert "± n/a [n/a]" in paths[2].read_text()
    assert json.loads(paths[1].read_text())["groups"][0]["metrics"]["vqa.total"]["std"] is None


def test_curve_aggregation(sweep):
    curves = aggregate_curves(sweep, "vqa.weather")
    assert [c.group for c in curves] == list(GROUPS)
    c = curves[0]
    runs = [r["curve"] for r in sweep if r["group"] == "SigLIP_u"]
    assert c.x == pytest.approx([np.mean([100 * (i + 1) + s for s in range(3)]) for i in range(4)])  # x averaged
    y = np.array([[p["vqa"]["weather"] for p in cv] for cv in runs])
    assert c.mean == pytest.approx(y.mean(0))
    assert c.low == pytest.approx(y.min(0)) and c.high == pytest.approx(y.max(0))
    assert c.std == pytest.approx(y.std(0, ddof=1)) and c.n == (3, 3, 3, 3)

    short = [dict(r) for r in sweep]
    short[0] = {**short[0], "curve": short[0]["curve"][:2]}
    assert len(aggregate_curves(short, "vqa.weather")[0].x) == 2  # cut to the shortest finished run


def test_report_beside_the_paper_with_figures(sweep, tmp_path):
    paths = write_report("transfer-weather", sweep, tmp_path, table="A5", figures=("curves", "bars"))
    assert [p.name for p in paths] == ["report.md", "curves.png", "curves.pdf", "bars.png", "bars.pdf"]
    for p in paths[1:]:
        data = p.read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    md = paths[0].read_text()
    assert "## Table A5" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| paper model"))
    assert "| time ours | time paper | weather ours | weather paper |" in header
    rows = {r.group: r for r in aggregate(sweep)}
    for group in GROUPS:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {group} | {group} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        for k, attr in enumerate(ATTRS):
            ours = format_summary(rows[group].metrics[f"vqa.{attr}"], 1, with_n=True)
            assert cells[3 + 2 * k] == ours and "(n=3)" in ours
            assert cells[4 + 2 * k] == f"{TABLE_A5[group][k]:.1f}"
    assert "SigLIP-SigLIP-D" in md  # paper rows without a group are named
    assert "faithfulness.total †" in md and "uvlm addition" in md
    assert "SigLIP-SigLIP/3" in md  # the failed run is listed
    assert "![curves](curves.png)" in md and "(bars.pdf)" in md


def test_curves_mark_chance_and_the_papers_end_points(sweep):
    """Curve panels of class-scored metrics get a chance line; every paper row our groups match gets its printed
    value as a marker at our last point; time (scored by distance) gets no chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uvlm.experiments.report import _mark_chance_and_paper, chance_level

    assert chance_level("vqa.weather") == pytest.approx(100 / 3) and chance_level("vqa.position") == 25.0
    assert chance_level("vqa.time") is None and chance_level("vqa.total") is None
    rows = aggregate(sweep)
    fig, (weather, time) = plt.subplots(1, 2)
    _mark_chance_and_paper(weather, "vqa.weather", rows, ReportSpec(table="A5"), 400.0)
    _mark_chance_and_paper(time, "vqa.time", rows, ReportSpec(table="A5"), 400.0)
    marks = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in weather.lines}
    col = ATTRS.index("weather")
    for group in GROUPS:
        assert marks[f"paper {group} (Table A5)"] == ([400.0], [TABLE_A5[group][col]])
    assert marks["chance (33.3)"][1] == [100 / 3, 100 / 3]
    assert not [ln for ln in time.lines if ln.get_label().startswith("chance")]
    assert len([ln for ln in time.lines if ln.get_label().startswith("paper")]) == len(GROUPS)
    no_table = plt.subplots()[1]
    _mark_chance_and_paper(no_table, "vqa.weather", rows, ReportSpec(), 400.0)
    assert [ln.get_label() for ln in no_table.lines] == ["chance (33.3)"]
    plt.close("all")


def test_the_bars_legend_hides_no_bar(tmp_path, monkeypatch):
    """Scores near 100 fill every panel to the top: the legend of the paper's markers goes below the panels, one for
    the figure, where it covers no bar and no error bar."""
    import uvlm.experiments.report as report

    rng = np.random.default_rng(5)
    records = [run(g, s, rng, fid=False) for g in GROUPS for s in range(3)]
    for r in records:
        r["final"]["vqa"] = {a: float(rng.uniform(97, 100)) for a in ATTRS}
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, out, stem: figures.append(fig) or [])
    spec = ReportSpec(table="A5", metrics=("vqa.weather", "vqa.total"))
    report.plot_bars(aggregate(records), spec, tmp_path, "bars")
    (fig,) = figures
    fig.canvas.draw()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert len(legends) == 1 and [t.get_text() for t in legends[0].get_texts()] == ["paper (Table A5)"]
    box = legends[0].get_window_extent()
    drawn = [a for ax in fig.axes for a in (*ax.patches, *ax.lines)]  # the bars and the error bars' caps
    assert len(drawn) == 2 * (len(GROUPS) + 2)
    assert not [a for a in drawn if box.overlaps(a.get_window_extent())]


def test_mixed_fid_extractors_get_separate_columns(tmp_path):
    rng = np.random.default_rng(3)
    records = [run("SigLIP-VQ", s, rng, extractor="inception") for s in range(2)]
    records += [run("VQ-VQ", s, rng, extractor="reader") for s in range(2)]
    records += [run("SigLIP-SigLIP", s, rng, extractor="reader", decoder="pixel") for s in range(2)]
    md = write_report("mixed-vs-task-specific", records, tmp_path, table="A3", figures=())[0].read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| paper model"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "FID ours (inception)" in cols and "FID ours (reader)" in cols and "FID paper (Inception-v3)" in cols
    rows = {r.group: r for r in aggregate(records)}

    def cells(group):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {group} | {group} |"))
        return dict(zip(cols, (c.strip() for c in line.strip("|").split("|"))))

    vq = cells("VQ-VQ")
    assert vq["FID ours (reader)"] == format_summary(rows["VQ-VQ"].metrics["fid.fid"], 1, with_n=True)
    assert vq["FID ours (inception)"] == "-" and vq["FID paper (Inception-v3)"] == f"{TABLE_A3['VQ-VQ'][5]:.1f}"
    sv = cells("SigLIP-VQ")
    assert sv["FID ours (reader)"] == "-" and sv["FID ours (inception)"].startswith(
        f"{rows['SigLIP-VQ'].metrics['fid.fid'].mean:.1f} ±")
    # the paper has no FID for SigLIP-SigLIP: ours comes from the pixel decoder and is marked as an addition
    ss = cells("SigLIP-SigLIP")
    assert ss["FID ours (reader)"].endswith("†") and ss["FID paper (Inception-v3)"] == "-"
    assert "pixel decoder" in md and "never mixed" in md


def test_scaling_and_transfer_figures(tmp_path):
    rng = np.random.default_rng(5)
    # the sweep labels its axis in the paper's units (the runner scales the data down itself)
    records = [run(f"VQ-VQ understanding={n}", s, rng, labels={"variant": "VQ-VQ", "understanding": n})
               for n in (120_000, 180_000, 240_000) for s in range(2)]
    paths = write_report("scaling-understanding", records, tmp_path / "scaling", table="A4", figures=("scaling",),
                         x_key="understanding", metrics=("vqa.total", "fid.fid"))
    assert [p.name for p in paths] == ["report.md", "scaling.png", "scaling.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    md = paths[0].read_text()
    line = next(ln for ln in md.splitlines()
                if ln.startswith("| VQ-VQ (und 240K, gen 60K) | VQ-VQ understanding=240000 |"))
    assert "| 94.0 |" in line and "| 165.1 |" in line  # Table A4's printed total and FID at 240K / 60K

    records = [run(f"{mode} {share}", s, rng, fid=False, labels={"mode": mode, "bias_share": share})
               for mode in ("unified", "understanding-only") for share in (0.0, 0.05, 0.5) for s in range(2)]
    paths = write_report("transfer-curve", records, tmp_path / "transfer", figures=("transfer",),
                         x_key="bias_share", series_key="mode", metrics=("vqa.weather",), band="ci95")
    assert [p.name for p in paths] == ["report.md", "transfer.png", "transfer.pdf"]
    assert paths[1].read_bytes().startswith(b"\x89PNG")


def test_runner_shaped_records(tmp_path):
    """Records as the sweep writes them: counters beside the scores, per-run strings, the probe's t-SNE."""
    rng = np.random.default_rng(11)
    records = []
    for group in ("SigLIP_u", "SigLIP-SigLIP"):
        for seed in range(2):
            r = run(group, seed, rng, fid=False)
            if group != "SigLIP_u":
                r["final"]["fid"] = {"fid": float(rng.uniform(50, 90)), "extractor": "reader", "num_features": 256,
                                     "n_real": 200, "n_fake": 200}
                r["final"]["faithfulness"] = {"unit": "percent", "n": 200,
                                              "scores": {a: float(rng.uniform(0, 100)) for a in ATTRS},
                                              "counts": {a: 40 for a in ATTRS}}
            labels = [["sunny", "cloudy", "raining"][i % 3] for i in range(30)]
            r["final"]["probe"] = {"accuracy": float(rng.uniform(0.9, 1.0)), "chance": 0.34, "n_train": 400,
                                   "dim": 64, "run": f"runs/{group}-seed{seed}", "checkpoint": f"step-{seed}",
                                   "tsne": rng.normal(size=(30, 2)).tolist(), "labels": labels,
                                   "classes": ["sunny", "cloudy", "raining"]}
            records.append(r)
    rows = aggregate(records)  # per-run strings (run folder, checkpoint) do not make the group inconsistent
    assert "probe.run" not in rows[0].qualifiers and rows[1].extractor("fid.fid") == "reader"
    assert rows[1].metrics["faithfulness.scores.total"].n == 2 and "probe.dim" in rows[1].metrics

    out = write_results(tmp_path, records, "probe")
    assert "probe.dim" in {x["metric"] for x in csv.DictReader(out[0].open())}  # everything in the CSV ...
    md = out[2].read_text()
    assert "probe.accuracy" in md and "probe.dim" not in md and "fid.n_real" not in md  # ... scores in the tables
    assert "faithfulness.counts" not in md

    paths = write_report("probe", records, tmp_path, {"table": "A3", "figures": ["tsne"], "curve_metric": "weather"})
    assert [p.name for p in paths] == ["report.md", "tsne.png", "tsne.pdf"]
    assert paths[1].read_bytes().startswith(b"\x89PNG") and paths[2].read_bytes().startswith(b"%PDF")
    report = paths[0].read_text()
    # SigLIP-SigLIP generates SigLIP embeddings: its FID is a pixel-decoder FID, which the paper does not have
    line = next(ln for ln in report.splitlines() if ln.startswith("| SigLIP-SigLIP | SigLIP-SigLIP |"))
    assert "† |" in line and "pixel decoder" in report
    assert "faithfulness.scores.total †" in report


def test_paper_row_lookup():
    t1, a3, a4 = paper_table("1"), paper_table("Table A3"), paper_table("a4")
    assert t1.lookup("SigLIP*-SigLIP", {}).values == (TABLE_A3["SigLIP*-SigLIP"][4], None)
    assert t1.lookup("g", {"variant": "VQ-VQ", "affine": True}).values == (
        TABLE_A3["VQ*-VQ"][4], TABLE_A3["VQ*-VQ"][5])
    assert a3.lookup("VQ-VQ", {"affine": True}).name == "VQ*-VQ"
    assert a3.lookup("VQ-VQ", {}).name == "VQ-VQ"
    assert a4.lookup("x", {"variant": "SigLIP-VQ", "generation": 90_000}).name == "SigLIP-VQ (und 120K, gen 90K)"
    # a sweep labelled in its own sample counts maps onto the paper's with a factor
    assert a4.lookup("x", {"variant": "SigLIP-VQ", "generation_samples": 1800},
                     {"generation_samples": 50}).name == "SigLIP-VQ (und 120K, gen 90K)"
    assert a4.lookup("x", {"variant": "SigLIP-VQ", "generation_samples": 1800}) is None  # unscaled: no such row
    # controls the paper never ran get no paper row: alpha = 0 anywhere, the unbiased control on the biased tables
    a5 = paper_table("A5")
    assert a5.lookup("x", {"variant": "SigLIP-SigLIP", "alpha": 1}).name == "SigLIP-SigLIP"
    assert a5.lookup("x", {"variant": "SigLIP-SigLIP", "alpha": 0}) is None
    assert a5.lookup("x", {"variant": "SigLIP_u", "bias": "none"}) is None
    assert a5.lookup("x", {"variant": "SigLIP_u", "bias": "weather:0.05"}).name == "SigLIP_u"
    assert a3.lookup("SigLIP_u", {"bias": "none"}).name == "SigLIP_u"  # A3 is on unbiased data
    assert a3.lookup("x", {"variant": "VQ-VQ", "alpha": 0.0}) is None
    with pytest.raises(UserError, match="unknown paper table"):
        paper_table("A9")


def test_spec_validation(sweep, tmp_path):
    with pytest.raises(UserError, match="unknown figure kind"):
        ReportSpec(figures=("pie",))
    with pytest.raises(UserError, match="needs x_key"):
        ReportSpec(figures=("scaling",))
    with pytest.raises(UserError, match="unknown paper table"):
        ReportSpec(table="B1")
    with pytest.raises(UserError, match="unknown report option"):
        write_report("x", sweep, tmp_path, colour="red")
    with pytest.raises(UserError, match="no run records"):
        write_report("x", [], tmp_path)
    with pytest.raises(UserError, match="numeric label"):
        write_report("x", sweep, tmp_path, figures=("scaling",), x_key="understanding_samples")
    spec = ReportSpec.from_dict({"table": "A5", "figures": ["curves"], "metrics": ["vqa.weather"]})
    assert spec.figures == ("curves",) and ReportSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UserError, match="unknown report spec key"):
        ReportSpec.from_dict({"tables": "A5"})


def test_spec_from_recipe_settings():
    from types import SimpleNamespace

    spec = ReportSpec.coerce(SimpleNamespace(table="A6", figures=("curves", "bars"), curve_metric="battery",
                                             x_axis=None))
    assert spec.table == "A6" and spec.figures == ("curves", "bars")
    assert spec.metrics[:2] == ("vqa.battery", "vqa.time") and "fid.fid" in spec.metrics
    spec = ReportSpec.from_recipe({"figures": ["transfer"], "x_axis": "bias_share", "curve_metric": "weather"})
    assert spec.x_key == "bias_share" and spec.metrics[0] == "vqa.weather" and spec.table is None
    with pytest.raises(UserError, match="unknown \\[report\\] key"):
        ReportSpec.from_recipe({"x_key": "bias_share"})
    assert ReportSpec.coerce(None) == ReportSpec()


def test_groups_sharing_a_paper_row_are_flagged(tmp_path):
    rng = np.random.default_rng(2)
    records = [run(f"SigLIP_u bias_share={b}", s, rng, fid=False, labels={"variant": "SigLIP_u", "bias_share": b})
               for b in (0.25, 1.0) for s in range(2)]
    md = write_report("transfer-curve", records, tmp_path, table="A5", figures=())[0].read_text()
    assert "all match the paper row SigLIP_u (they differ in bias_share)" in md


def test_the_docs_tables_equal_the_committed_results():
    """Every ``<!-- committed: ... -->`` block of the docs is what its committed records give (numbers cannot drift)."""
    from pathlib import Path

    from uvlm.experiments.doctables import blocks

    root = Path(__file__).resolve().parents[1]
    found = 0
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for path, in_docs, from_files in blocks(doc.read_text(), root):
            found += 1
            assert in_docs == from_files, f"{doc.name}: the table of {path} differs from its committed records: run " \
                                          f"python -m uvlm.experiments.doctables {doc.relative_to(root)}"
    assert found >= 1


def test_doctables_rewrites_a_block_from_records(tmp_path):
    import json

    from uvlm.experiments.doctables import blocks, rewrite

    folder = tmp_path / "results" / "cpu" / "r"
    folder.mkdir(parents=True)
    recs = [{"group": "SigLIP_u", "seed": s, "status": "done", "labels": {"variant": "SigLIP_u"},
             "final": {"vqa": {"time": 90.0, "weather": 30.0 + s, "position": 99.0, "battery": 98.0, "total": 80.0}}}
            for s in range(3)] + [{"group": "SigLIP_u", "seed": 3, "status": "missing", "final": {}}]
    (folder / "records.json").write_text(json.dumps({"records": recs}))
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- committed: results/cpu/r -->\nstale\n<!-- /committed -->\nend\n")
    assert rewrite(doc, tmp_path) == 1
    text = doc.read_text()
    assert "| SigLIP_u | 3 | 90.0 ± 0.0 | 31.0 ± 1.0 |" in text and "30.0 / 31.0 / 32.0" in text
    assert text.startswith("intro\n") and text.endswith("<!-- /committed -->\nend\n")
    assert all(a == b for _, a, b in blocks(text, tmp_path)) and rewrite(doc, tmp_path) == 0
