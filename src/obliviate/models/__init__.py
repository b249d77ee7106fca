"""Models: embedded defaults, local folders, hub ids, and fine-tuned targets (cached by content)."""
