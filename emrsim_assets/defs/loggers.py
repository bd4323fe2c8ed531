"""Loggers for people: a short progress view on the terminal, every detail in a log file."""

import logging
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata


class _ProgressHandler(logging.Handler):
    """Only what the pipeline itself says (tables loaded, months done, rows/s, ETA): no engine
    events, no stack traces. The CLI's final report names any failure in one sentence."""

    def emit(self, record: logging.LogRecord) -> None:
        if not has_log_record_metadata(record):
            return
        meta = get_log_record_metadata(record)
        # INFO only: the engine's errors ("Dependencies for step ... failed. Not executing.")
        # are the report's business, in one sentence each.
        if meta["dagster_event"] is not None or record.levelno != logging.INFO:
            return
        print(f"  {meta['orig_message']}", file=sys.stdout, flush=True)


@dg.logger(config_schema=None, description="The pipeline's own progress lines, for the terminal.")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger(f"emrsim.progress.{init_context.run_id}")
    logger.handlers = [_ProgressHandler()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def log_dir() -> Path:
    return Path(os.environ.get("EMRSIM_WORK_DIR", ".emrsim")).resolve() / "logs"


@dg.logger(
    config_schema=None,
    description="Every event of the run, stack traces included, in <work dir>/logs/.",
)
def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    directory = log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(directory / f"{init_context.run_id}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger(f"emrsim.file.{init_context.run_id}")
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def cli_logging(verbose: bool) -> dict[str, Any]:
    """Run config for the CLI: the console logger only with -v; progress and the file always."""
    return {
        "loggers": {
            "console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}},
            "progress": {},
            "file": {},
        }
    }
