"""Read and validate a config file: every problem at once, each naming the file, the view and the key."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from airflow_matview.config.messages import describe_error
from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings
from airflow_matview.config.rules import file_problems
from airflow_matview.config.yaml_reader import read_config_file
from airflow_matview.database.identifiers import printable
from airflow_matview.exceptions import InvalidConfigFileError, UnreadableConfigFileError

if TYPE_CHECKING:
    from collections.abc import Iterator

_LEVELS: dict[str, type[BaseModel]] = {"file": MatviewConfig, "defaults": ViewSettings, "views": ViewConfig}


def load_config(source: str | Path | Mapping[str, Any]) -> MatviewConfig:
    """Read and validate a config file (or an already-parsed mapping).

    :raises InvalidConfigFileError: listing every problem, each naming the file, the view and the key.
    """
    label = "<dict>" if isinstance(source, Mapping) else printable(str(source))
    with _no_cycle_collection():
        if isinstance(source, Mapping):
            data: object = source
        else:
            try:
                data = read_config_file(source)
            except UnreadableConfigFileError as exc:
                raise InvalidConfigFileError(label, exc.problems) from None
        try:
            config = MatviewConfig.model_validate(data)
        except ValidationError as exc:
            problems = [describe_error(error, data, _LEVELS) for error in exc.errors()]
            raise InvalidConfigFileError(label, problems) from None
        folder = None if isinstance(source, Mapping) else Path(source).parent
        if problems := file_problems(config, folder):
            raise InvalidConfigFileError(label, problems)
    return config


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the file is read and validated (unless the caller paused it).

    Reading allocates tens of thousands of short-lived objects without cycles (YAML nodes and their marks, a merged
    mapping per view), which reference counting frees. The collector would only scan them, and count those alive
    at the time towards its next full collection, which walks every object of the process, Airflow's included.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
