"""Whether the Hugging Face hub may be contacted."""

import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """True when any of the hub's offline switches is set."""
    return any(os.environ.get(var, "").lower() in {"1", "true", "yes", "on"} for var in OFFLINE_VARIABLES)
