"""A notifier module that hangs, or raises anything, while imported: its own problem, named, in one line; never a
hang of ``validate`` (or of the parsing of the DAG file), nor an exit as if the user had pressed Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from devtools.harness.console_script import interruptible
from devtools.harness.paths import REPO

CLI = Path(sys.executable).parent / "airflow-matview"
IMPORT_TIMEOUT_SECONDS = 15  # airflow_matview.config.notifier_specs.IMPORT_TIMEOUT_SECONDS
MODULES = {
    # It says when it started to hang: the file named by the environment variable, if any.
    "hangs_on_import": (
        "import os, time\nif 'HANGING' in os.environ:\n    open(os.environ['HANGING'], 'w').close()\n"
        "while True:\n    time.sleep(1)\n"
    ),
    "interrupts_on_import": "raise KeyboardInterrupt\n",
    "exits_on_import": "import sys\nsys.exit(3)\n",
    "base_exception_on_import": "class Stop(BaseException):\n    pass\n\nraise Stop('stopped by the module')\n",
    "generator_exit_on_import": "raise GeneratorExit\n",
}


def write(tmp_path: Path, names: list[str]) -> tuple[Path, dict[str, str]]:
    """A config naming each module's ``notify`` as an on_failure notifier, and the environment that finds them."""
    for name in names:
        (tmp_path / f"{name}.py").write_text(MODULES[name])
    notifiers = "".join(f"      - {{notifier: {name}.notify}}\n" for name in names)
    config = tmp_path / "matviews.yaml"
    config.write_text(f"views:\n  - name: public.a\n    on_failure:\n{notifiers}")
    return config, {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_each_module_that_fails_at_import_is_named_with_its_reason(tmp_path: Path) -> None:
    config, env = write(tmp_path, list(MODULES))
    started = time.monotonic()
    done = subprocess.run([str(CLI), "validate", str(config)], capture_output=True, text=True, env=env, timeout=120)
    seconds = time.monotonic() - started
    print(f"validate with a notifier module that hangs at import: done in {seconds:.1f}s")
    assert done.returncode == 1, done.stderr
    heading, line = done.stderr.splitlines()
    assert heading == f"Invalid matview config {config}: 1 problem(s):"
    assert line.split("; item ") == [
        "  - views[0] (public.a): on_failure: item 1: hangs_on_import.notify cannot be imported: module "
        f"hangs_on_import did not finish importing within {IMPORT_TIMEOUT_SECONDS:g} s (does it connect somewhere, "
        "or wait for something, when imported?); fix the module",
        "2: interrupts_on_import.notify cannot be imported (KeyboardInterrupt, raised by module interrupts_on_import "
        "while imported)",
        "3: exits_on_import.notify cannot be imported (SystemExit: 3)",
        "4: base_exception_on_import.notify cannot be imported (Stop: stopped by the module)",
        "5: generator_exit_on_import.notify cannot be imported (GeneratorExit, raised by module "
        "generator_exit_on_import while imported)",
    ]
    assert IMPORT_TIMEOUT_SECONDS <= seconds < IMPORT_TIMEOUT_SECONDS + 30


def test_ctrl_c_while_a_notifier_module_hangs_is_the_users_interrupt(tmp_path: Path) -> None:
    config, env = write(tmp_path, ["hangs_on_import"])
    hanging = tmp_path / "hanging"
    process = subprocess.Popen(
        [str(CLI), "validate", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "HANGING": str(hanging)},
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 60
        while not hanging.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hanging.exists(), "the notifier module was never imported"
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert err.strip() == "airflow-matview validate: interrupted"


def test_dag_parsing_names_the_module_before_airflows_own_timeout(tmp_path: Path) -> None:
    """Airflow parses the DAG file (``dags/matviews.py``), in a process of its own as its dag-processor does: the
    import error is our line, within our limit, not Airflow's "DagBag import timeout" at 30 s (or a parser killed
    by the module's KeyboardInterrupt)."""
    config, env = write(tmp_path, ["hangs_on_import", "interrupts_on_import"])
    shutil.copy(REPO / "dags" / "matviews.py", tmp_path / "matviews.py")
    script = textwrap.dedent(
        f"""
        import json, time
        from devtools.harness.dag_runs import DagBag
        started = time.monotonic()
        bag = DagBag(dag_folder={str(tmp_path)!r})
        print(json.dumps({{"seconds": time.monotonic() - started, "errors": list(bag.import_errors.values())}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"DAG file with a notifier module that hangs at import: import error after {parsed['seconds']:.1f}s")
    (error,) = parsed["errors"]
    assert f"Invalid matview config {config}: 1 problem(s):" in error
    assert f"module hangs_on_import did not finish importing within {IMPORT_TIMEOUT_SECONDS:g} s" in error
    assert "KeyboardInterrupt, raised by module interrupts_on_import while imported" in error
    assert parsed["seconds"] < 30
