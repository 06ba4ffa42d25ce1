"""``make bench`` section 3: parse time of ``dags/matviews.py`` against a hand-written loop of DAGs."""

from __future__ import annotations

import compileall
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from devtools.benchmarks.bench_stats import Line, Plan, Report, median, ratio_of_medians, secs

REPO = Path(__file__).resolve().parents[2]


# Runs in a fresh interpreter that imports airflow.sdk first, as Airflow's dag-processor has, then forks one
# child per measurement, as the dag-processor does per file: each child imports the DAG file cold. Each child
# calls gc.freeze(), as the dag-processor does before it forks (DagFileProcessorManager.before_run): the garbage
# collector's full passes then walk what parsing adds, not all of Airflow's objects. The per-task re-parse is
# measured without it (the worse case), and BENCH_GC_UNFROZEN shows a full parse without it.
PARSE_WORKER = textwrap.dedent(
    """
    import gc, json, os, runpy, sys, time
    import airflow.sdk
    from airflow.sdk import DAG

    for job in json.loads(sys.stdin.read()):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.environ.update(job["env"])
            if not job["env"].get("BENCH_GC_UNFROZEN") and not job["env"].get("_AIRFLOW_PARSING_CONTEXT_DAG_ID"):
                gc.freeze()
            if job["env"].get("BENCH_GC_OFF"):
                gc.disable()
            started, cpu_started = time.perf_counter(), time.process_time()
            module = runpy.run_path(job["file"])
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            dags = len({value.dag_id for value in module.values() if isinstance(value, DAG)})
            os.write(write_end, json.dumps({"seconds": seconds, "cpu": cpu, "dags": dags}).encode())
            os._exit(0)
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit(f"parsing {job['file']} failed")
        print(json.dumps({**json.loads(b"".join(chunks)), "key": job["key"]}), flush=True)
    """
)

HAND_WRITTEN_LOOP = textwrap.dedent(
    '''
    """What users write instead: a loop of plain DAGs, each with one SQLExecuteQueryOperator."""

    from datetime import datetime, timezone

    from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
    from airflow.sdk import DAG

    VIEWS = {views!r}

    for name in VIEWS:
        dag_id = f"refresh.{{name}}"
        with DAG(dag_id, schedule="@daily", start_date=datetime(2024, 1, 1, tzinfo=timezone.utc), catchup=False) as dag:
            SQLExecuteQueryOperator(
                task_id="refresh", conn_id="postgres_default", sql=f"REFRESH MATERIALIZED VIEW {{name}}"
            )
        globals()[dag_id] = dag
    '''
)


# Every production key of the config (README "Production settings"), set in defaults: 1,000 views that each get
# a timezone, four notifiers, a Deadline Alert, a pool, a queue, a priority and a description.
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
PRODUCTION_DEFAULTS = f"""  timezone: Europe/Berlin
  on_failure: [{{notifier: {SMTP}, to: ops@example.com, smtp_conn_id: smtp_ops}}]
  on_retry: [{{notifier: {SMTP}, to: ops@example.com, subject: "retry {{{{ matview.view }}}}"}}]
  on_success: [{{notifier: {SMTP}, to: ops@example.com}}]
  on_stale: [{{notifier: {SMTP}, to: oncall@example.com}}]
  max_staleness: 2h
  pool: pg_main
  pool_slots: 1
  priority_weight: 5
  queue: refreshes
  description: Kept fresh by airflow-matview
"""


def write_production_dag_file(root: Path, count: int) -> Path:
    """``dags/matviews.py`` with ``count`` views and every production key set in ``defaults:``."""
    folder = root / f"matviews_production_{count}"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", folder / "matviews.py")
    example = (REPO / "dags" / "matviews.yaml").read_text().split("\nviews:")[0]
    views = "".join(f"  - name: public.view_{index:05d}\n" for index in range(count))
    (folder / "matviews.yaml").write_text(example + "\n" + PRODUCTION_DEFAULTS + "views:\n" + views)
    return folder / "matviews.py"


def write_dag_files(root: Path, count: int) -> tuple[Path, Path]:
    names = [f"public.view_{index:05d}" for index in range(count)]
    ours = root / f"matviews_{count}"
    ours.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", ours / "matviews.py")
    example = (REPO / "dags" / "matviews.yaml").read_text().split("\nviews:")[0]
    (ours / "matviews.yaml").write_text(example + "\nviews:\n" + "".join(f"  - name: {name}\n" for name in names))
    loop = root / f"loop_{count}"
    loop.mkdir()
    (loop / "refresh_views.py").write_text(HAND_WRITTEN_LOOP.format(views=names))
    return ours / "matviews.py", loop / "refresh_views.py"


def bench_parse(report: Report, plan: Plan, env: dict[str, str], root: Path) -> None:
    # The package's bytecode, as an installed package has it: with PYTHONDONTWRITEBYTECODE set (as on some
    # machines) every child would otherwise compile its modules from source, while the loop's provider has its own.
    compileall.compile_dir(REPO / "airflow_matview", quiet=1)
    jobs: list[dict[str, Any]] = []
    expected: dict[str, int] = {}
    for count in plan.view_counts:
        factory_file, loop_file = write_dag_files(root, count)
        repeats = plan.parse_repeats_largest if count == max(plan.view_counts) else plan.parse_repeats
        alternatives = [
            (f"ours/{count}", factory_file, {}, count),
            (f"loop/{count}", loop_file, {}, count),
            (f"task/{count}", factory_file, {"_AIRFLOW_PARSING_CONTEXT_DAG_ID": f"matview.public.view_{count // 2:05d}",
                                      "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "refresh"}, 1),
        ]  # fmt: skip
        if count == 1_000:  # every production key; the garbage collector's share, with and without gc.freeze()
            alternatives += [
                (f"production/{count}", write_production_dag_file(root, count), {}, count),
                (f"ours-nogc/{count}", factory_file, {"BENCH_GC_OFF": "1"}, count),
                (f"loop-nogc/{count}", loop_file, {"BENCH_GC_OFF": "1"}, count),
                (f"ours-unfrozen/{count}", factory_file, {"BENCH_GC_UNFROZEN": "1"}, count),
                (f"loop-unfrozen/{count}", loop_file, {"BENCH_GC_UNFROZEN": "1"}, count),
            ]
        for key, _, _, dags in alternatives:
            expected[key] = dags
        for repetition in range(repeats + 1):  # the first round warms the file system cache; not counted
            shift = repetition % len(alternatives)
            for key, path, extra_env, _ in alternatives[shift:] + alternatives[:shift]:
                jobs.append({"key": key if repetition else "warmup", "file": str(path), "env": extra_env})
    worker = subprocess.run(
        [sys.executable, "-c", PARSE_WORKER],
        input=json.dumps(jobs),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if worker.returncode != 0:
        raise RuntimeError(f"parse benchmark failed:\n{worker.stderr[-5000:]}")
    samples: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for line in worker.stdout.splitlines():
        if not line.startswith("{"):
            continue
        result = json.loads(line)
        if result["key"] == "warmup":
            continue
        if result["dags"] != expected[result["key"]]:
            raise RuntimeError(f"{result['key']}: expected {expected[result['key']]} DAGs, got {result['dags']}")
        samples.setdefault(result["key"], []).append(result["seconds"])
        cpu.setdefault(result["key"], []).append(result["cpu"])
    for count in plan.view_counts:
        full, loop, task = samples[f"ours/{count}"], samples[f"loop/{count}"], samples[f"task/{count}"]
        ratio = ratio_of_medians(full, loop)
        target, verdict = "", ""
        if count == 1_000:
            target = "< 2 s; ratio <= 1.00"
            verdict = f"{'met' if median(full) < 2 else 'MISSED'}; {'met' if ratio <= 1.0 else 'MISSED'}"
        report.add(
            parse_line(
                f"parse {count:,} views: dags/matviews.py vs hand-written DAG + SQLExecuteQueryOperator loop",
                full,
                loop,
                target,
                verdict,
            )
        )
        report.add(
            parse_line(f"per-task re-parse, {count:,} views (parsing context = one dag_id) vs the loop", task, loop)
        )
        if f"production/{count}" in samples:
            production = samples[f"production/{count}"]
            report.add(
                parse_line(
                    f"parse {count:,} views with every production key (timezone, 4 notifiers, max_staleness, pool, "
                    "queue, priority, description) vs the same views without them",
                    production,
                    full,
                    "< 1 s",
                    "met" if median(production) < 1 else "MISSED",
                )
            )
        if f"ours-nogc/{count}" in samples:
            report.add(
                parse_line(
                    f"parse {count:,} views, both with the garbage collector off (shows the share of GC passes)",
                    samples[f"ours-nogc/{count}"],
                    samples[f"loop-nogc/{count}"],
                )
            )
            report.add(
                parse_line(
                    f"parse {count:,} views, both without gc.freeze() before the fork (full GC passes walk all of "
                    "Airflow's objects too)",
                    samples[f"ours-unfrozen/{count}"],
                    samples[f"loop-unfrozen/{count}"],
                )
            )
    report.notes.append(cpu_note(cpu, plan))


def cpu_note(cpu: dict[str, list[float]], plan: Plan) -> str:
    """The parse ratios by CPU time, which other processes on a shared machine do not inflate as they do wall time."""
    pairs = [
        (f"{kind}/{count}", f"loop/{count}", f"{label} {count:,}")
        for count in plan.view_counts
        for kind, label in (("ours", "parse"), ("task", "per-task re-parse"))
    ]
    pairs += [
        (f"{kind}/1000", f"{other}/1000", label)
        for kind, other, label in (
            ("production", "ours", "production keys vs without, 1,000"),
            ("ours-nogc", "loop-nogc", "GC off, 1,000"),
            ("ours-unfrozen", "loop-unfrozen", "without gc.freeze(), 1,000"),
        )
        if f"{kind}/1000" in cpu
    ]
    ratios = [f"{label}: {ratio_of_medians(cpu[ours], cpu[theirs]):.2f}" for ours, theirs, label in pairs]
    return "\nParse rows by CPU time (medians of time.process_time(), same runs): " + "; ".join(ratios) + "."


def parse_line(measurement: str, ours: list[float], theirs: list[float], target: str = "", verdict: str = "") -> Line:
    """A row of item 3: medians of parse times and their ratio."""
    ratio = f"{ratio_of_medians(ours, theirs):.2f}"
    return Line("3", measurement, secs(median(ours)), secs(median(theirs)), ratio, target, verdict)
