"""Re-render results.md and results_legacy.md from their CSVs:
``python experiments/accuracy/pipeline.py``.

The pipeline itself (budgets, runs, provenance, rows) is ``accelsim.accuracy``; each task's
rows are made by ``python experiments/accuracy/<task>.py`` and its probes by
``python experiments/accuracy/probes.py --task <task>``.
"""

from accelsim.accuracy.table import (
    RESULTS_CSV,
    RESULTS_LEGACY_CSV,
    RESULTS_LEGACY_MD,
    RESULTS_MD,
    read_rows,
    render_markdown,
)
from accelsim.files import write_text_atomic

if __name__ == "__main__":
    write_text_atomic(RESULTS_MD, render_markdown(read_rows(RESULTS_CSV)))
    legacy = read_rows(RESULTS_LEGACY_CSV)
    write_text_atomic(RESULTS_LEGACY_MD, render_markdown(legacy, legacy=True))
