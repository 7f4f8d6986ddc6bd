"""The quiet terminal of a local run (pipeline/console.py), without a pipeline run."""

import io
import logging
import os
import subprocess
import sys
import textwrap

from pipeline import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(message, level=logging.INFO, pathname="/site-packages/tfx/x.py", created=0.0):
    record = logging.makeLogRecord(
        {"msg": message, "levelno": level, "levelname": logging.getLevelName(level)}
    )
    record.pathname, record.created = pathname, created
    return record


def _terminal():
    out, err = io.StringIO(), io.StringIO()
    return console.Terminal(out, err), out, err


def test_a_component_is_one_line_with_its_time_and_whether_it_was_cached():
    terminal, out, _ = _terminal()
    progress = console.ComponentProgress(terminal)
    progress.handle(_record("Component Transform is running.", created=100.0))
    progress.handle(_record("Going to run a new execution 7", created=101.0))
    progress.handle(_record("Component Transform is finished.", created=113.44))
    progress.handle(_record("Component StatisticsGen is running.", created=114.0))
    progress.handle(_record("A cached execution 3 is used.", created=114.1))
    progress.handle(_record("Component StatisticsGen is finished.", created=114.2))
    progress.handle(_record("Skipping component Tuner.", created=114.3))
    assert out.getvalue() == (
        "Transform ... 13.4 s\nStatisticsGen ... 0.2 s, cached\nTuner skipped\n"
    )


def test_output_while_a_component_runs_gets_lines_of_its_own():
    terminal, out, err = _terminal()
    progress = console.ComponentProgress(terminal)
    stdout = console.TerminalStdout(terminal)
    progress.handle(_record("Component Trainer is running.", created=10.0))
    print("Epoch 1/2", file=stdout)
    console.TerminalWarnings(terminal).handle(
        _record("bad rows", logging.WARNING, os.path.join(ROOT, "components", "x.py"))
    )
    progress.handle(_record("Component Trainer is finished.", created=77.3))
    progress.handle(_record("Component Evaluator is running.", created=78.0))
    progress.fail()
    assert out.getvalue() == (
        "Trainer ...\nEpoch 1/2\nTrainer finished: 67.3 s\nEvaluator ... failed\n"
    )
    assert err.getvalue() == "WARNING: bad rows\n"


def test_only_project_warnings_and_errors_from_anywhere_reach_the_terminal():
    project_file = os.path.join(ROOT, "components", "log_example_gen.py")
    library_file = os.path.join(sys.prefix, "lib", "site-packages", "tfx", "launcher.py")
    cases = [
        (logging.WARNING, project_file, True),  # dead letters, not blessed, baseline skipped
        (logging.INFO, project_file, False),
        (logging.WARNING, library_file, False),  # deprecations, absl chatter
        (logging.ERROR, library_file, True),  # "Execution 5 failed."
    ]
    for level, path, shown in cases:
        assert console.belongs_on_terminal(_record("m", level, path)) is shown, (level, path)


def test_the_log_file_is_under_the_work_dir_named_by_time():
    import datetime

    path = console.log_file_path("runs/local", datetime.datetime(2026, 1, 2, 3, 4, 5))
    assert path == os.path.join("runs/local", "logs", "run-20260102-030405.log")


# A stand-in for the CLI: library chatter on every channel, a project warning,
# component records, and (with "fail") an exception.
SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from pipeline import console

    with console.QuietRun(sys.argv[1], verbose=sys.argv[2] == "verbose"):
        absl = logging.getLogger("absl")
        absl.info("Component Trainer is running.")
        absl.info("Using deployment config: executor_specs {")
        os.write(2, b"W tensorflow/core/cost_estimator.cc:699] C++ noise\\n")
        warnings.warn("this API is deprecated", FutureWarning)
        print("Epoch 1/1")
        logging.getLogger().handle(logging.LogRecord(
            "root", logging.WARNING, os.path.join(os.getcwd(), "components", "gate.py"), 1,
            "12 bad log rows went to the dead letters", None, None))
        absl.info("Component Trainer is finished.")
        if sys.argv[3] == "fail":
            raise RuntimeError("the data broke the schema")
        if sys.argv[3] == "exit":
            raise SystemExit("error: no event logs")
        print("=== Run summary ===")
""")


def _run(tmp_path, mode, outcome):
    """The script's terminal (stdout and stderr) and its log file."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), mode, outcome],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    (name,) = os.listdir(tmp_path / "logs")
    return proc, os.path.join(tmp_path, "logs", name)


def test_a_quiet_run_shows_progress_and_warnings_and_logs_the_rest(tmp_path):
    proc, log_path = _run(tmp_path, "quiet", "ok")
    assert proc.returncode == 0, proc.stdout
    log = open(log_path).read()
    lines = proc.stdout.splitlines()
    assert lines[0] == lines[-1] == f"Full log: {log_path}"
    assert lines[1] == "Trainer ..." and lines[2] == "Epoch 1/1"
    assert "WARNING: 12 bad log rows went to the dead letters" in lines
    assert lines[-3].startswith("Trainer finished: ") and lines[-2] == "=== Run summary ==="
    assert len(lines) == 7, proc.stdout
    for detail in ("Using deployment config", "C++ noise", "this API is deprecated"):
        assert detail in log and detail not in proc.stdout, detail
    assert "Component Trainer is running." in log and "dead letters" in log


def test_a_failed_quiet_run_shows_the_traceback_and_the_log(tmp_path):
    proc, log_path = _run(tmp_path, "quiet", "fail")
    assert proc.returncode == 1
    assert "RuntimeError: the data broke the schema" in proc.stdout
    assert "Traceback (most recent call last)" in proc.stdout
    assert "Trainer finished: " in proc.stdout
    assert proc.stdout.splitlines()[-1] == f"The run failed. Full log: {log_path}"
    assert "RuntimeError: the data broke the schema" in open(log_path).read()


def test_an_exit_with_a_message_shows_it_not_a_traceback(tmp_path):
    proc, log_path = _run(tmp_path, "quiet", "exit")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-2:] == [
        "error: no event logs",
        f"The run failed. Full log: {log_path}",
    ]
    assert "Traceback" not in proc.stdout


def test_verbose_shows_everything_and_writes_the_log_too(tmp_path):
    proc, log_path = _run(tmp_path, "verbose", "ok")
    assert proc.returncode == 0, proc.stdout
    for detail in ("Using deployment config", "C++ noise", "this API is deprecated", "Epoch"):
        assert detail in proc.stdout, detail
    assert "Using deployment config" in open(log_path).read()


def test_the_command_lines_import_no_tensorflow_before_the_quiet_terminal():
    """TensorFlow's C++ start-up lines go to fd 2 at import: imported before
    ``QuietRun`` they would reach the terminal, not the log file."""
    script = (
        "import sys\n"
        "import pipeline.cli, pipeline.infer_schema, pipeline.local_runner\n"
        "print(sorted(m for m in ('tensorflow', 'tfx.components') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout
