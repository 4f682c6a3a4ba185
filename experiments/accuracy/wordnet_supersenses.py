"""Regenerate the wordnet_supersenses rows of experiments/accuracy/results.csv (see pipeline.py)."""

import sys

from pipeline import main

if __name__ == "__main__":
    sys.exit(main("wordnet_supersenses"))
