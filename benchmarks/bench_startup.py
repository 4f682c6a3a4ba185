"""Start-up cost of ``accelsim run`` on a zoo model, warm and cold, against its yardsticks.

Each command runs in a fresh interpreter, interleaved with the others so that machine load hits
them alike, ``--repeats`` times (the median is printed, with the range):

* ``help``: ``python -m accelsim --help`` (the CLI's own floor);
* ``warm``: ``run --hw hw_configs/int4_sparse.yaml --model MODEL`` with the workload graph
  already in the cache (goal: at most 3x ``help``);
* ``import``: ``python -c "import torch, transformers"``;
* ``cold``: the same ``run`` on an empty ``ACCELSIM_CACHE`` (goal: at most 3x ``import`` for
  vit_b16, 6x for the large models, under 2 GB peak RSS);
* ``floor``: what every cold run does before any work of accelsim's own: import torch, the
  model's transformers code and ``torch.export``, and build the seeded random-init model
  (``accelsim.zoo.build_model`` on the threads a cold build uses, ``BUILD_THREADS``).
  ``cold`` minus ``floor`` is accelsim's share: compressing, tracing, simulating, reporting.

Per command: wall seconds, CPU seconds (user + system of that child), peak resident memory
(``ru_maxrss``) and, for the cold runs, the seconds until the first progress line on stderr
(goal: within 5 s). Ratios are printed for both wall and CPU time: on a machine shared with
other jobs the wall ratio moves with the load (a niced child waits for a core), the CPU ratio
much less. Usage::

    python benchmarks/bench_startup.py [--models vit_b16] [--repeats 3]
    python benchmarks/bench_startup.py --large    # vit_l16, bert_large, wav2vec2_large, cold
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from accelsim.graph.workload import BUILD_THREADS

REPO = Path(__file__).resolve().parents[1]
HW = "hw_configs/int4_sparse.yaml"
GOAL_WARM_OVER_HELP = 3.0
GOAL_COLD_OVER_IMPORT = {"vit_b16": 3.0}
GOAL_LARGE_COLD_OVER_IMPORT = 6.0
GOAL_COLD_RSS_MB = 2048
GOAL_FIRST_LINE_S = 5.0
LARGE_MODELS = "vit_l16,bert_large,wav2vec2_large"


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    first_stderr_line_s: float | None


def measure(argv: list[str], cache: str) -> Sample:
    """Run ``argv`` to completion; its wall time, its own peak RSS, its first stderr line."""
    env = {**os.environ, "ACCELSIM_CACHE": cache,
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    first: list[float] = []

    def read_stderr() -> None:
        assert child.stderr is not None
        for _ in child.stderr:
            if not first:
                first.append(time.perf_counter() - start)

    reader = threading.Thread(target=read_stderr)
    reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {child.returncode}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                  first[0] if first else None)


def row(name: str, samples: list[Sample], base: list[Sample] | None) -> str:
    """Median, min and max wall seconds, the wall ratio to ``base``'s median, median CPU
    seconds and their ratio, the peak RSS and the latest first stderr line."""
    walls = [s.wall_s for s in samples]
    median = statistics.median(walls)
    cpu = statistics.median(s.cpu_s for s in samples)
    if base:
        ratio = f"{median / statistics.median(s.wall_s for s in base):6.1f}x"
        cpu_ratio = f"{cpu / statistics.median(s.cpu_s for s in base):6.1f}x"
    else:
        ratio = cpu_ratio = " " * 7
    firsts = [s.first_stderr_line_s for s in samples if s.first_stderr_line_s is not None]
    first = f"{max(firsts):6.1f}" if firsts else "     -"
    return (f"{name:<22} {median:8.2f} {min(walls):7.2f} {max(walls):7.2f} {ratio} "
            f"{cpu:6.2f} {cpu_ratio} {max(s.peak_rss_mb for s in samples):9,.0f} {first}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_b16", help="comma-separated zoo models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-warm", action="store_true", help="skip the help and warm runs")
    parser.add_argument("--large", action="store_true",
                        help=f"cold runs of {LARGE_MODELS} (sets --models, --no-warm)")
    args = parser.parse_args()
    if args.large:
        args.models, args.no_warm = LARGE_MODELS, True
    python = sys.executable
    help_cmd = [python, "-m", "accelsim", "--help"]
    import_cmd = [python, "-c", "import torch, transformers"]

    def floor_cmd(model: str) -> list[str]:
        return [python, "-c", "import torch, torch.export; "
                f"torch.set_num_threads({BUILD_THREADS}); "
                f"from accelsim.zoo import build_model; build_model({model!r})"]

    results: dict[str, list[Sample]] = {}
    warm_cache = tempfile.mkdtemp(prefix="accelsim_warm_")
    try:
        for model in args.models.split(","):
            run_cmd = [python, "-m", "accelsim", "run", "--hw", HW, "--model", model]
            if not args.no_warm:
                measure(run_cmd, warm_cache)  # fills the warm cache
            for _ in range(args.repeats):
                plan = [("import", import_cmd, None)]
                if not args.no_warm:
                    plan += [("help", help_cmd, warm_cache), (f"warm {model}", run_cmd, warm_cache)]
                plan += [(f"floor {model}", floor_cmd(model), "cold"),
                         (f"cold {model}", run_cmd, "cold")]
                for name, argv, cache in plan:
                    cold = tempfile.mkdtemp(prefix="accelsim_cold_") if cache in (None, "cold") \
                        else None
                    try:
                        results.setdefault(name, []).append(measure(argv, cold or cache))
                    finally:
                        if cold:
                            shutil.rmtree(cold)
    finally:
        shutil.rmtree(warm_cache)
    print(f"{'command':<22} {'median_s':>8} {'min_s':>7} {'max_s':>7} {'ratio':>7} "
          f"{'cpu_s':>6} {'cpu_rat':>7} {'peak_rss_mb':>9} {'first_line_s':>6}")
    helps = results.get("help")
    print(row("import torch+tf", results["import"], None))
    if helps is not None:
        print(row("--help", helps, None))
    for model in args.models.split(","):
        if helps is not None:
            print(row(f"warm {model}", results[f"warm {model}"], helps) + "  (ratio vs --help, "
                  f"goal <= {GOAL_WARM_OVER_HELP:.0f}x)")
        goal = GOAL_COLD_OVER_IMPORT.get(model, GOAL_LARGE_COLD_OVER_IMPORT)
        floor, cold = results[f"floor {model}"], results[f"cold {model}"]
        print(row(f"floor {model}", floor, results["import"])
              + "  (ratios vs import: torch, the model's transformers code, torch.export, init)")
        print(row(f"cold {model}", cold, results["import"]) + "  (ratios vs import, "
              f"goal <= {goal:.0f}x, < {GOAL_COLD_RSS_MB:,} MB, first line <= "
              f"{GOAL_FIRST_LINE_S:.0f} s)")
        own_wall, own_cpu = (statistics.median(getattr(s, field) for s in cold)
                             - statistics.median(getattr(s, field) for s in floor)
                             for field in ("wall_s", "cpu_s"))
        import_cpu = statistics.median(s.cpu_s for s in results["import"])
        print(f"  accelsim's own share of cold {model} (cold - floor): {own_wall:.2f} s wall, "
              f"{own_cpu:.2f} s CPU = {own_cpu / import_cpu:.1f}x the import's CPU")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
