"""Obliviate: a declarative experiment engine for machine unlearning in LLMs."""

__version__ = "0.1.0"
