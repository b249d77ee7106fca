"""Result loggers, registered by kind (``overall.logger``)."""

from obliviate.loggers.json_logger import LOGGERS, RunFolder, RunOptions

__all__ = ["LOGGERS", "RunFolder", "RunOptions"]
