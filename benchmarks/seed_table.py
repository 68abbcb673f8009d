"""The main job over seeds and thread counts: min / median / max image and pixel AUROC, fit seconds.

Runs ``squid_digit_anatomy.py`` (any Squid or SimSID recipe) once per ``(recipe, seed, threads)`` in its own
process with ``OMP_NUM_THREADS`` set, ``--jobs`` processes at a time, and writes one JSON per run to ``--out``;
runs whose JSON exists are not repeated, so an interrupted table resumes. The table reads anomalib's own test
metrics of each run (the recipe's score and map, thresholds from its validation split).

    python benchmarks/seed_table.py --config configs/squid_digit_anatomy.yaml --seeds 0-9 --threads 1 --jobs 2
    python benchmarks/seed_table.py --config configs/squid_digit_anatomy.yaml --seeds 0-2 --threads 2
    python benchmarks/seed_table.py --report benchmarks/results/main_job_seeds   # tables of the JSONs there

Prints Markdown: one summary row per recipe and thread count, then one row per run.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MAIN_JOB = REPO / "benchmarks" / "squid_digit_anatomy.py"


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-9"``, ``"0,3,5"`` or a mix such as ``"0-2,7"``.

    Raises:
        argparse.ArgumentTypeError: If a part is not an integer or a range ``a-b`` with ``a <= b``.

    """
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            msg = f"seeds {text!r}: {part!r} is neither an integer nor a range such as 0-9"
            raise argparse.ArgumentTypeError(msg) from None
        if first > last or first < 0:
            msg = f"seeds {text!r}: the range {part!r} is empty or negative"
            raise argparse.ArgumentTypeError(msg)
        seeds.extend(range(first, last + 1))
    return sorted(set(seeds))


def result_path(out: Path, config: Path, seed: int, threads: int) -> Path:
    """Where the JSON of one run goes: ``<out>/<recipe stem>_seed<seed>_t<threads>.json``."""
    return out / f"{config.stem}_seed{seed}_t{threads}.json"


def run_command(config: Path, seed: int, threads: int, json_path: Path, work_dir: Path) -> list[str]:
    """The main job's command line for one run."""
    return [
        sys.executable,
        str(MAIN_JOB),
        "--config",
        str(config),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
        "--json",
        str(json_path),
        "--work-dir",
        str(work_dir),
    ]


def run_one(config: Path, seed: int, threads: int, out: Path) -> Path:
    """Run the main job once (skipped when its JSON exists); its log goes next to the JSON.

    Raises:
        RuntimeError: If the run fails; the message names its log.

    """
    json_path = result_path(out, config, seed, threads)
    if json_path.is_file():
        return json_path
    log = json_path.with_suffix(".log")
    work_dir = out / "work" / json_path.stem
    command = run_command(config, seed, threads, json_path, work_dir)
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    with log.open("w") as stream:
        code = subprocess.run(command, env=env, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode
    if code or not json_path.is_file():
        msg = f"{shlex.join(command)} failed (exit code {code}); see {log}"
        raise RuntimeError(msg)
    return json_path


def load_runs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Records ``{recipe, seed, threads, image, pixel, fit_seconds}`` of run JSONs named by :func:`result_path`.

    Raises:
        ValueError: If a file's name does not follow that pattern or it lacks anomalib's test metrics.

    """
    records = []
    for path in sorted(paths):
        stem, _, rest = path.stem.rpartition("_seed")
        seed, _, threads = rest.partition("_t")
        if not stem or not seed.isdigit() or not threads.isdigit():
            msg = f"{path}: not a run of this script (expected <recipe>_seed<N>_t<threads>.json)"
            raise ValueError(msg)
        data = json.loads(path.read_text())
        metrics = data.get("test_metrics", {})
        if "image_AUROC" not in metrics or "pixel_AUROC" not in metrics:
            msg = f"{path}: no image_AUROC / pixel_AUROC in its test_metrics"
            raise ValueError(msg)
        records.append(
            {
                "recipe": stem,
                "seed": int(seed),
                "threads": int(threads),
                "image": float(metrics["image_AUROC"]),
                "pixel": float(metrics["pixel_AUROC"]),
                "fit_seconds": float(data.get("fit_seconds", float("nan"))),
            }
        )
    return records


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: per recipe and thread count, runs, min / median / max of image and pixel AUROC, median fit."""
    lines = [
        "| recipe | threads | runs | image AUROC min / median / max | pixel AUROC min / median / max | fit s, median |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["recipe"], record["threads"]), []).append(record)
    for (recipe, threads), runs in sorted(groups.items()):
        cells = []
        for key in ("image", "pixel"):
            values = [run[key] for run in runs]
            cells.append(f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}")
        fit = statistics.median(run["fit_seconds"] for run in runs)
        lines.append(f"| {recipe} | {threads} | {len(runs)} | {cells[0]} | {cells[1]} | {fit:.0f} |")
    return "\n".join(lines)


def runs_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per run."""
    lines = ["| recipe | seed | threads | image AUROC | pixel AUROC | fit s |", "|---|---|---|---|---|---|"]
    for record in sorted(records, key=lambda r: (r["recipe"], r["threads"], r["seed"])):
        lines.append(
            f"| {record['recipe']} | {record['seed']} | {record['threads']} | {record['image']:.3f} | "
            f"{record['pixel']:.3f} | {record['fit_seconds']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="recipe (repeat for several)")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-9"), help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (threads x jobs <= cores)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "main_job_seeds")
    parser.add_argument("--report", type=Path, default=None, help="only print the tables of the JSONs in a folder")
    options = parser.parse_args(argv)
    if options.report is None and not options.config:
        parser.error("give --config (one or more recipes) or --report FOLDER")
    for config in options.config or []:
        if not config.is_file():
            parser.error(f"--config {config}: no such file")
    if options.jobs < 1 or min(options.threads) < 1:
        parser.error("--jobs and --threads must be >= 1")
    if options.report is not None and not options.report.is_dir():
        parser.error(f"--report {options.report}: no such folder")
    return options


def main(argv: Sequence[str] | None = None) -> None:
    """Run what is missing, then print the tables."""
    options = parse_args(argv)
    if options.report is not None:
        paths = list(options.report.glob("*_seed*_t*.json"))
    else:
        options.out.mkdir(parents=True, exist_ok=True)
        plan = [
            (config.resolve(), seed, threads)
            for config in options.config
            for threads in options.threads
            for seed in options.seeds
        ]
        with ThreadPoolExecutor(options.jobs) as pool:
            futures = [pool.submit(run_one, *run, options.out) for run in plan]
            paths = []
            for (config, seed, threads), future in zip(plan, futures, strict=True):
                paths.append(future.result())
                print(f"done: {config.name} seed {seed}, {threads} thread(s)", flush=True)
    records = load_runs(paths)
    print("command: `python " + shlex.join([str(Path(sys.argv[0]).name), *sys.argv[1:]]) + "`\n")
    print(summary_table(records) + "\n\n" + runs_table(records))


if __name__ == "__main__":
    main()
