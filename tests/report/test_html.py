"""accelsim.report.html and `accelsim report`: self-contained interactive pages, opened in a real
browser (headless Chromium) when one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from accelsim.cli import main
from accelsim.errors import AccelsimError
from accelsim.report.html import ExplorerData, pareto_explorer_html, run_report_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian package `chromium`, installed by .ci/run)")


def results() -> pd.DataFrame:
    """Two models x two variants, one infeasible point; what load_results gives for a store."""
    rows = []
    for model in ("vit", "bert"):
        for v, variant in enumerate(("int8_dense", "int4_sp24")):
            for rows_ in (16, 32, 64):
                latency = 4.0 / rows_ * (1 + v) + (model == "bert")
                rows.append({"model": model, "variant": variant, "recipe": f"r_{variant}",
                             "hw_array_rows": rows_, "hw_dram_bandwidth_gbps": 34.0,
                             "latency_ms": latency, "energy_uj": 100.0 / latency - 10 * v,
                             "area_mm2": rows_ / 32, "cycles": int(latency * 1e6),
                             "feasible": rows_ != 64 or v == 0, "key": f"k{len(rows)}"})
    frame = pd.DataFrame(rows)
    return frame.assign(meets_constraints=frame["feasible"])


def test_the_explorer_page_is_one_offline_file_with_every_design_point():
    frame = results()
    fronts = {("latency_ms", "energy_uj"): {"vit": [2, 1], "bert": [8]},
              ("energy_uj", "latency_ms"): {"vit": [1], "bert": [8]}}
    page = pareto_explorer_html(ExplorerData(frame, ("latency_ms", "energy_uj"),
                                             frame["meets_constraints"].to_numpy(), fronts,
                                             "latency_ms", "energy_uj", "toy sweep"))
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js inlined, nothing fetched
    assert "plotly.js" in page.lower()
    data = json.loads(re.search(r'id="accelsim-data">(.*?)</script>', page, re.S).group(1))
    assert data["fronts"]["latency_ms|energy_uj"] == {"vit": [2, 1], "bert": [8]}
    # hover: the full design point (model, variant, recipe, hardware fields, metrics)
    hover = data["hover"][0]
    for field in ("model", "variant", "recipe", "hw_array_rows", "hw_dram_bandwidth_gbps",
                  "latency_ms", "energy_uj", "area_mm2"):
        assert f"<b>{field}</b>" in hover
    assert "<b>key</b>" not in hover
    shown = sorted(r for t in data["traces"] for r in t["rows"])
    assert shown == list(range(len(frame)))  # every point once: eligible traces + ineligible
    assert 'class="filter-model"' in page and 'class="filter-variant"' in page
    assert '<select id="axis-x">' in page


def test_an_axis_outside_the_offered_ones_is_one_line():
    frame = results()
    with pytest.raises(AccelsimError, match="axis 'cycles' is not one of latency_ms, energy_uj"):
        pareto_explorer_html(ExplorerData(frame, ("latency_ms", "energy_uj"),
                                          np.ones(len(frame), bool), {}, "cycles", "energy_uj",
                                          "t"))


RUN = {
    "model": "toy", "recipe": "w4a4_sp24",
    "hw": {"name": "toy_hw", "overrides": {"array.rows": 32}, "config": {}},
    "totals": {"cycles": 1234567, "latency_ms": 1.23, "energy_uj": 4.5, "area_mm2": 0.9},
    "layers": [
        {"name": f"layers.{i}.fc1", "op": "gemm", "m": 197, "k": 768, "n": 3072, "count": 1,
         "compute_cycles": 1000 + i, "stall_cycles": 10, "cycles": 1010 + i,
         "sparsity": "2:4", "energy_uj": {"mac": 1.0, "sram": 0.5, "dram": 2.0, "vector": 0.0,
                                           "leakage": 0.1, "total": 3.6}}
        for i in range(3)
    ],
}


def test_the_run_page_shows_each_layer_with_its_details_and_the_design_point():
    page = run_report_html(RUN)
    assert "toy on toy_hw: per-layer breakdown" in page
    assert "1,234,567 cycles" in page and "overrides array.rows=32" in page
    def in_plot_json(text: str) -> str:  # plotly writes <, > and / escaped into its JSON
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\u002f")

    assert in_plot_json("<b>m</b>: 197<br>") in page
    assert in_plot_json("<b>energy_dram_uj</b>: 2<br>") in page
    with pytest.raises(AccelsimError, match="lacks 'stall_cycles'"):
        run_report_html({"layers": [{"name": "a", "compute_cycles": 1, "energy_uj": {}}]})


def test_report_cli_writes_the_page_and_rejects_bad_input_before_work(tmp_path, capsys):
    export = tmp_path / "sweep.csv"
    results().to_csv(export, index=False)
    out = tmp_path / "sweep.html"
    assert main(["report", str(export), "--html", str(out), "--x", "area"]) == 0
    page = out.read_text()
    assert "sweep: Pareto explorer" in page and "mm²" in page
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(RUN))
    assert main(["report", str(run_json), "--html", str(tmp_path / "run.html")]) == 0
    capsys.readouterr()
    for argv, message in [
        ([str(export), "--html", str(tmp_path / "no" / "x.html")], "folder"),
        ([str(export), "--html", str(tmp_path / "x.png")], "suffix '.png' is not one of .html"),
        ([str(tmp_path / "x.txt"), "--html", str(tmp_path / "x.html")], "suffix '.txt'"),
        ([str(export), "--html", str(tmp_path / "x.html"), "--x", "hw_array_rows"],
         "--x hw_array_rows: not an axis of these results; allowed: latency_ms, energy_uj"),
        ([str(export), "--html", str(tmp_path / "x.html"), "--y", "tops"],
         "column 'tops' is not in the results"),
    ]:
        assert main(["report", *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def open_in_chromium(page_path, screenshot) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console lines that report an error; a
    screenshot is kept at ``screenshot``."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1400,1000", "--virtual-time-budget=15000",
             "--enable-logging=stderr", "--v=0"]
    url = page_path.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=180)
    subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True,
                   timeout=180)
    errors = [line for line in dom.stderr.splitlines()
              if ":CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    return dom.stdout, errors


@needs_chromium
def test_both_pages_render_in_headless_chromium_without_script_errors(tmp_path):
    frame = results()
    export = tmp_path / "sweep.csv"
    frame.to_csv(export, index=False)
    pages = {"explorer": tmp_path / "explorer.html", "run": tmp_path / "run.html"}
    assert main(["report", str(export), "--html", str(pages["explorer"])]) == 0
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(RUN))
    assert main(["report", str(run_json), "--html", str(pages["run"])]) == 0
    for kind, page in pages.items():
        screenshot = tmp_path / f"{kind}.png"
        dom, errors = open_in_chromium(page, screenshot)
        print(f"screenshot of the {kind} page: {screenshot}")
        assert errors == [], errors
        assert 'class="plot-container' in dom
        points = dom.count('class="point"')
        if kind == "explorer":
            # every design point, plus each model's front over latency and energy
            assert points > len(frame)
        else:
            assert points == len(RUN["layers"]) * 7  # 2 cycle + 5 energy components per layer
        assert screenshot.stat().st_size > 10_000
