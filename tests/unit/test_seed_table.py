"""`benchmarks/seed_table.py`: seeds parsing, run bookkeeping, the tables (no training)."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("seed_table", REPO / "benchmarks" / "seed_table.py")
seed_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_table)


def _write_run(folder: Path, recipe: str, seed: int, threads: int, image: float, pixel: float, fit: float) -> Path:
    path = folder / f"{recipe}_seed{seed}_t{threads}.json"
    metrics = {"image_AUROC": image, "pixel_AUROC": pixel, "image_F1Score": 0.5}
    path.write_text(json.dumps({"fit_seconds": fit, "test_metrics": metrics}))
    return path


def test_parse_seeds():
    assert seed_table.parse_seeds("0-3") == [0, 1, 2, 3]
    assert seed_table.parse_seeds("5,0-1,1") == [0, 1, 5]
    for bad in ("a", "3-1", "1-x"):
        with pytest.raises(argparse.ArgumentTypeError, match="seeds"):
            seed_table.parse_seeds(bad)


def test_tables_give_min_median_max_per_recipe_and_threads(tmp_path):
    for seed, image in enumerate((0.90, 0.97, 0.95)):
        _write_run(tmp_path, "squid_digit_anatomy", seed, 1, image, image - 0.1, 100 + seed)
    _write_run(tmp_path, "squid_digit_anatomy", 0, 2, 0.93, 0.92, 60)
    records = seed_table.load_runs(tmp_path.glob("*.json"))
    assert len(records) == 4
    summary = seed_table.summary_table(records).splitlines()
    assert summary[2] == "| squid_digit_anatomy | 1 | 3 | 0.900 / 0.950 / 0.970 | 0.800 / 0.850 / 0.870 | 101 |"
    assert summary[3] == "| squid_digit_anatomy | 2 | 1 | 0.930 / 0.930 / 0.930 | 0.920 / 0.920 / 0.920 | 60 |"
    runs = seed_table.runs_table(records).splitlines()
    assert runs[2] == "| squid_digit_anatomy | 0 | 1 | 0.900 | 0.800 | 100 |"
    assert len(runs) == 6


def test_load_runs_names_a_file_it_cannot_read(tmp_path):
    stray = tmp_path / "results.json"
    stray.write_text("{}")
    with pytest.raises(ValueError, match=r"results\.json: not a run"):
        seed_table.load_runs([stray])
    incomplete = tmp_path / "squid_seed0_t1.json"
    incomplete.write_text(json.dumps({"test_metrics": {"image_AUROC": 0.9}}))
    with pytest.raises(ValueError, match=r"squid_seed0_t1\.json: no image_AUROC / pixel_AUROC"):
        seed_table.load_runs([incomplete])


def test_run_one_resumes_and_reports_a_failed_run(tmp_path, monkeypatch):
    config = tmp_path / "recipe.yaml"
    config.write_text("seed_everything: 0\n")
    done = _write_run(tmp_path, "recipe", 4, 1, 0.9, 0.9, 1.0)
    assert seed_table.run_one(config, 4, 1, tmp_path) == done  # exists: not run again

    failing = tmp_path / "failing_job.py"
    failing.write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    monkeypatch.setattr(seed_table, "MAIN_JOB", failing)
    with pytest.raises(RuntimeError, match=r"exit code 3\); see .*recipe_seed5_t1\.log"):
        seed_table.run_one(config, 5, 1, tmp_path)
    assert "boom" in (tmp_path / "recipe_seed5_t1.log").read_text()

    writing = tmp_path / "writing_job.py"  # stands in for the main job: writes the JSON it is given
    writing.write_text(
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "path = args[args.index('--json') + 1]\n"
        "metrics = {'image_AUROC': 0.5, 'pixel_AUROC': float(os.environ['OMP_NUM_THREADS'])}\n"
        "open(path, 'w').write(json.dumps({'fit_seconds': 1, 'test_metrics': metrics}))\n"
    )
    monkeypatch.setattr(seed_table, "MAIN_JOB", writing)
    path = seed_table.run_one(config, 6, 2, tmp_path)
    (record,) = seed_table.load_runs([path])
    assert record == {"recipe": "recipe", "seed": 6, "threads": 2, "image": 0.5, "pixel": 2.0, "fit_seconds": 1.0}


def test_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        seed_table.parse_args([])
    assert "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        seed_table.parse_args(["--config", str(tmp_path / "missing.yaml")])
    assert "no such file" in capsys.readouterr().err


def test_report_prints_the_tables_of_a_folder(tmp_path, capsys, monkeypatch):
    _write_run(tmp_path, "simsid_digit_anatomy", 1, 1, 0.96, 0.97, 300)
    monkeypatch.setattr(sys, "argv", ["seed_table.py", "--report", str(tmp_path)])
    seed_table.main(["--report", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| simsid_digit_anatomy | 1 | 1 | 0.960 / 0.960 / 0.960 |" in out
    assert "| simsid_digit_anatomy | 1 | 1 | 0.960 | 0.970 | 300 |" in out
