"""Loggers for people: a short progress view on the terminal, every detail in a log file."""

import logging
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from emrsim_assets.defs.dagster_internals import get_log_record_metadata, has_log_record_metadata
from emrsim_assets.private import private_dir, private_file
from emrsim_assets.progress import drawn
from emrsim_assets.settings import settings


class _ProgressHandler(logging.Handler):
    """Only what the pipeline itself says (tables loaded, months done, rows/s, ETA): no engine
    events, no stack traces. The CLI's final report names any failure in one sentence. At a
    terminal, progress events are drawn as bars (progress.terminal_bars): their lines are not
    printed again."""

    def __init__(self, bars: bool) -> None:
        super().__init__()
        self.bars = bars

    def emit(self, record: logging.LogRecord) -> None:
        if not has_log_record_metadata(record):
            return
        meta = get_log_record_metadata(record)
        # INFO only: the engine's errors ("Dependencies for step ... failed. Not executing.")
        # are the report's business, in one sentence each.
        if meta["dagster_event"] is not None or record.levelno != logging.INFO:
            return
        message = str(meta["orig_message"])
        if self.bars and drawn(message):
            return
        print(f"  {message}", file=sys.stdout, flush=True)


@dg.logger(
    config_schema={
        "bar": dg.Field(bool, default_value=False, description="Progress bars (a terminal).")
    },
    description="The pipeline's own progress lines, for the terminal.",
)
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger(f"emrsim.progress.{init_context.run_id}")
    logger.handlers = [_ProgressHandler(bool(init_context.logger_config["bar"]))]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def log_dir() -> Path:
    return settings().work_dir / "logs"


@dg.logger(
    config_schema=None,
    description="Every event of the run, stack traces included, in <work dir>/logs/.",
)
def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    path = private_dir(log_dir()) / f"{init_context.run_id}.log"
    if not path.exists():
        private_file(path)
    handler = logging.FileHandler(path, encoding="utf-8")
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
            # Decided here: in a step, stdout is Dagster's capture of it, never a terminal.
            "progress": {"config": {"bar": sys.stdout.isatty()}},
            "file": {},
        }
    }
