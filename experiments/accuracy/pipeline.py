"""Re-render results.md from results.csv: ``python experiments/accuracy/pipeline.py``.

The pipeline itself (budgets, runs, provenance, rows) is ``accelsim.accuracy``; each task's
rows are made by ``python experiments/accuracy/<task>.py``.
"""

from accelsim.accuracy.table import RESULTS_MD, read_rows, render_markdown
from accelsim.files import write_text_atomic

if __name__ == "__main__":
    write_text_atomic(RESULTS_MD, render_markdown(read_rows()))
