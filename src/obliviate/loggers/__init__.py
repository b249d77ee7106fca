"""Result loggers, registered by ``logger.name``."""

from obliviate.loggers.json_logger import LOGGERS, RunFolder

__all__ = ["LOGGERS", "RunFolder"]
