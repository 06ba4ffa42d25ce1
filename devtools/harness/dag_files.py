"""A DAGs folder as users set one up: the shipped ``dags/matviews.py`` next to a config file, and a probe that
parses it in a fresh interpreter, noting every database and network call it makes."""

from __future__ import annotations

import shutil
import textwrap
from typing import TYPE_CHECKING

import yaml

from devtools.harness.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path


def dags_folder(tmp_path: Path, config: dict[str, object] | str) -> Path:
    """``tmp_path / "dags"``, holding the shipped DAG file and ``config`` as its ``matviews.yaml``.

    :param tmp_path: where to create the folder.
    :param config: the config, as data or as the file's text.
    """
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", folder)
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    (folder / "matviews.yaml").write_text(text)
    return folder


#: ``python -c PARSE_PROBE <dag file>`` parses the file and prints the number of ``matview.`` DAGs, the number of
#: socket and SQLite connections it made, the seconds it took, and the kinds of those connections.
PARSE_PROBE = textwrap.dedent(
    """
    import runpy, sys, time
    events = []
    watched = ("socket.connect", "sqlite3.connect", "socket.getaddrinfo")
    sys.addaudithook(lambda event, args: events.append(event) if event in watched else None)
    started = time.perf_counter()
    module = runpy.run_path(sys.argv[1])
    seconds = time.perf_counter() - started
    dags = [name for name in module if name.startswith("matview.")]
    print(len(dags), len(events), f"{seconds:.3f}", sorted(set(events)))
    """
)
