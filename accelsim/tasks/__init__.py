"""Real evaluation tasks (text, vision, speech) on offline data: splits, batches and metric."""
