"""The wordnet_supersenses rows of results.csv and results.md (see accelsim.accuracy.pipeline)."""

import sys

from accelsim.accuracy.pipeline import main

if __name__ == "__main__":
    sys.exit(main("wordnet_supersenses"))
