"""The terminal of a local run: what a person wants to see there, and a log file for the rest.

``QuietRun(work_dir)`` is a context manager for the length of a run. Inside it

* Python logging (absl, TFX, Beam, TF's Python side, this project) and Python
  warnings (``logging.captureWarnings``) go to ``<work_dir>/logs/run-<time>.log``;
* file descriptor 2 points at the same file, so TF's C++ logging, Beam worker
  processes and anything else that writes to stderr land there too (it stays
  so until the process ends: the noise of interpreter shutdown goes there too);
* the terminal gets one line per component (``ComponentProgress``, made from
  LocalDagRunner's "Component X is running/finished" records), what is written
  to ``sys.stdout`` (Keras' per-epoch lines, the summary), warnings from this
  project's code and errors from anywhere (``belongs_on_terminal``: anomalies,
  dead letters, not blessed), and on failure the traceback.

The log file's path is printed when the run starts and when it ends. With
``verbose=True`` the terminal gets everything, as it did before there was a
quiet mode, and the log file is written as well.
"""

from __future__ import annotations

import datetime
import faulthandler
import logging
import os
import re
import sys
import traceback
from typing import Dict, List, Optional, Set, TextIO

from absl import logging as absl_logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"
# What a run printed on stderr before the quiet mode (the format of logging's basicConfig).
VERBOSE_FORMAT = "%(levelname)s:%(name)s:%(message)s"

# LocalDagRunner's and the TFX launcher's records (tfx/orchestration/local/local_dag_runner.py,
# tfx/orchestration/portable/launcher.py).
COMPONENT_RUNNING = re.compile(r"Component (?P<name>\S+) is running\.")
COMPONENT_FINISHED = re.compile(r"Component (?P<name>\S+) is finished\.")
COMPONENT_SKIPPED = re.compile(r"Skipping component (?P<name>\S+)\.")
CACHED_EXECUTION = re.compile(r"A cached execution \d+ is used\.")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This project's code: its warnings are meant for the person running it.
PROJECT_DIRS = tuple(
    os.path.join(_ROOT, package) + os.sep
    for package in ("components", "datagen", "pipeline", "serving", "trainer")
)


def log_file_path(work_dir: str, now: Optional[datetime.datetime] = None) -> str:
    """``<work_dir>/logs/run-<YYYYmmdd-HHMMSS>.log`` for a run started at ``now``."""
    now = now or datetime.datetime.now()
    return os.path.join(work_dir, "logs", f"run-{now:%Y%m%d-%H%M%S}.log")


def from_project(path: str) -> bool:
    """Whether the source file ``path`` is this project's code (not a library's)."""
    return os.path.abspath(path).startswith(PROJECT_DIRS)


def belongs_on_terminal(record: logging.LogRecord) -> bool:
    """Errors from anywhere, and warnings logged by this project's code."""
    if record.levelno >= logging.ERROR:
        return True
    return record.levelno >= logging.WARNING and from_project(record.pathname)


class Terminal:
    """What the person running the pipeline sees: ``out`` for progress, ``err``
    for warnings and errors.

    A component's line is left open while it runs (``start_line``) and ended
    with its time (``finish_line``); anything written in between ends the open
    line first, so it never runs into other output.
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.line_open = False

    def _end_open_line(self) -> None:
        if self.line_open:
            self.out.write("\n")
            self.out.flush()
            self.line_open = False

    def write(self, text: str) -> int:
        """Writes ``text`` to ``out`` (what ``sys.stdout`` does in a quiet run)."""
        if text:
            self._end_open_line()
        return self.out.write(text)

    def print(self, line: str) -> None:
        """A whole line on ``out``."""
        self.write(line + "\n")
        self.out.flush()

    def start_line(self, text: str) -> None:
        """Writes ``text`` and leaves the line open for ``finish_line``."""
        self._end_open_line()
        self.out.write(text)
        self.out.flush()
        self.line_open = True

    def finish_line(self, tail: str, whole: str) -> None:
        """Ends the open line with ``tail``; writes ``whole`` on a line of its own
        when something else was written since the line was started."""
        if self.line_open:
            self.out.write(tail + "\n")
            self.line_open = False
        else:
            self.out.write(whole + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        """``text`` on ``err``, after whatever ``out`` holds."""
        self._end_open_line()
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()


class TerminalStdout:
    """``sys.stdout`` during a quiet run: the terminal's stdout, through ``Terminal.write``."""

    def __init__(self, terminal: Terminal) -> None:
        self._terminal = terminal

    def write(self, text: str) -> int:
        return self._terminal.write(text)

    def __getattr__(self, name: str):
        return getattr(self._terminal.out, name)


class ComponentProgress(logging.Handler):
    """One terminal line per component, from LocalDagRunner's records:
    ``Transform ... 13.4 s`` (``, cached`` when cached outputs were reused)."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal
        self.running: Optional[str] = None
        self._started: Dict[str, float] = {}
        self._cached: Set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if match := COMPONENT_RUNNING.fullmatch(message):
            self.running = match["name"]
            self._started[self.running] = record.created
            self.terminal.start_line(f"{self.running} ...")
        elif CACHED_EXECUTION.fullmatch(message) and self.running:
            self._cached.add(self.running)
        elif match := COMPONENT_FINISHED.fullmatch(message):
            name = match["name"]
            took = f"{record.created - self._started.get(name, record.created):.1f} s"
            if name in self._cached:
                took += ", cached"
            self.terminal.finish_line(f" {took}", f"{name} finished: {took}")
            self.running = None
        elif match := COMPONENT_SKIPPED.fullmatch(message):
            self.terminal.print(f"{match['name']} skipped")

    def fail(self) -> None:
        """Ends the running component's line: the run failed there."""
        if self.running:
            self.terminal.finish_line(" failed", f"{self.running} failed")
            self.running = None


class TerminalWarnings(logging.Handler):
    """The records ``belongs_on_terminal`` picks, on the terminal's ``err``."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal
        self.addFilter(belongs_on_terminal)
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.terminal.warn(self.format(record))


class QuietRun:
    """The terminal and the log file of a run (see the module docstring).

    An exception inside ends the process with status 1 once its traceback (or
    a ``SystemExit``'s message) and the log's path are on the terminal; the
    traceback is in the log too. ``KeyboardInterrupt`` passes through.
    """

    def __init__(self, work_dir: str, verbose: bool = False) -> None:
        self.log_path = log_file_path(work_dir)
        self.verbose = verbose
        self.terminal: Optional[Terminal] = None
        self.progress: Optional[ComponentProgress] = None
        self._stdout: Optional[TextIO] = None

    def _terminal_handlers(self) -> List[logging.Handler]:
        """Points stderr at the log file; the handlers that write to the terminal."""
        sys.stdout.flush()
        sys.stderr.flush()
        terminal_err = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        self.terminal = Terminal(sys.stdout, terminal_err)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log_fd, sys.stderr.fileno())
        os.close(log_fd)
        faulthandler.enable(terminal_err)  # a hard crash's Python traceback
        self._stdout, sys.stdout = sys.stdout, TerminalStdout(self.terminal)
        logging.captureWarnings(True)
        self.progress = ComponentProgress(self.terminal)
        return [self.progress, TerminalWarnings(self.terminal)]

    def __enter__(self) -> "QuietRun":
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        to_file = logging.FileHandler(self.log_path)
        to_file.setFormatter(logging.Formatter(LOG_FORMAT))
        if self.verbose:
            to_stderr = logging.StreamHandler(sys.stderr)
            to_stderr.setFormatter(logging.Formatter(VERBOSE_FORMAT))
            handlers = [to_stderr, to_file]
        else:
            handlers = [to_file, *self._terminal_handlers()]
        logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
        # Through absl's verbosity flag, not the logger's level: TF sets the flag
        # to FATAL and back around a SavedModel save, which resets the logger to it.
        absl_logging.set_verbosity(absl_logging.INFO)
        self._say(f"Full log: {self.log_path}")
        return self

    def _say(self, line: str, err: bool = False) -> None:
        if self.terminal is None:
            print(line, file=sys.stderr if err else sys.stdout, flush=True)
        elif err:
            self.terminal.warn(line)
        else:
            self.terminal.print(line)

    def __exit__(self, kind, error, trace) -> bool:
        if self._stdout is not None:
            sys.stdout.flush()
            sys.stdout = self._stdout
        if self.progress and error is not None:
            self.progress.fail()
        message = self._failure_message(kind, error, trace)
        if message:
            self._say(message, err=True)
            self._say(f"The run failed. Full log: {self.log_path}", err=True)
            raise SystemExit(1) from None
        self._say(f"Full log: {self.log_path}", err=error is not None)
        return False

    def _failure_message(self, kind, error, trace) -> str:
        """What the terminal shows of an exception that Python would print on
        stderr, now the log ('' when there is none, or stderr is the terminal)."""
        if error is None or self.terminal is None:
            return ""
        if isinstance(error, SystemExit):  # e.g. "error: data path ... does not exist"
            return "" if error.code is None or isinstance(error.code, int) else str(error.code)
        if not isinstance(error, Exception):  # KeyboardInterrupt: its traceback goes to the log
            return ""
        traceback.print_exception(kind, error, trace, file=sys.stderr)  # into the log
        return "".join(traceback.format_exception(kind, error, trace)).rstrip()
