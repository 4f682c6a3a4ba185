"""Re-render results.md, results_legacy.md and the README's accuracy table from the CSVs:
``python experiments/accuracy/pipeline.py``.

The pipeline itself (budgets, runs, provenance, rows) is ``accelsim.accuracy``; each task's
rows are made by ``python experiments/accuracy/<task>.py`` and its probes by
``python experiments/accuracy/probes.py --task <task>``.
"""

from pathlib import Path

from accelsim.accuracy.table import (
    RESULTS_CSV,
    RESULTS_LEGACY_CSV,
    RESULTS_LEGACY_MD,
    RESULTS_MD,
    read_rows,
    render_markdown,
    with_readme_table,
)
from accelsim.files import write_text_atomic

README = Path(__file__).resolve().parents[2] / "README.md"

if __name__ == "__main__":
    rows = read_rows(RESULTS_CSV)
    write_text_atomic(RESULTS_MD, render_markdown(rows))
    legacy = read_rows(RESULTS_LEGACY_CSV)
    write_text_atomic(RESULTS_LEGACY_MD, render_markdown(legacy, legacy=True))
    write_text_atomic(README, with_readme_table(README.read_text(), rows))
