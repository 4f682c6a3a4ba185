"""Compression: zero-preserving 4-bit quantization, 2:4 sparsity, recipes, fine-tuning, export."""
