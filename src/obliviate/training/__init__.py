"""The training loop shared by unlearning and fine-tuning."""
