"""Read and validate a config file: every problem at once, each naming the file, the view and the key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from airflow_matview.config.messages import describe_error
from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings
from airflow_matview.config.rules import file_problems
from airflow_matview.config.yaml_reader import read_config_file
from airflow_matview.database.identifiers import printable
from airflow_matview.exceptions import InvalidConfigFileError, UnreadableConfigFileError

_LEVELS: dict[str, type[BaseModel]] = {"file": MatviewConfig, "defaults": ViewSettings, "views": ViewConfig}


def load_config(source: str | Path | Mapping[str, Any]) -> MatviewConfig:
    """Read and validate a config file (or an already-parsed mapping).

    :raises InvalidConfigFileError: listing every problem, each naming the file, the view and the key.
    """
    label = "<dict>" if isinstance(source, Mapping) else printable(str(source))
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
        raise InvalidConfigFileError(label, [describe_error(error, data, _LEVELS) for error in exc.errors()]) from None
    folder = None if isinstance(source, Mapping) else Path(source).parent
    if problems := file_problems(config, folder):
        raise InvalidConfigFileError(label, problems)
    return config
