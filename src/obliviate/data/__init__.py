"""Data: the synthetic benchmark, dataset sources (synthetic, local JSON/JSONL, hub) and tokenisation."""
