"""MkDocs hooks (``hooks:`` in mkdocs.yml): pages generated from the code at build time, so they cannot drift.

- The config reference: ``<!-- config-keys -->`` in a page becomes the tables of every key of a view, rendered from
  the config's JSON Schema, itself generated from the config's model (:mod:`airflow_matview.config.model`): each key
  with its type, its default as the file writes it, and its description.
- The shipped schema, ``docs/matviews.schema.json``, must be the one the model generates (``make schema`` writes it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from mkdocs.exceptions import PluginError

from airflow_matview.config.schema import config_schema, schema_text

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

MARKER = "<!-- config-keys -->"
SCHEMA_FILE = "matviews.schema.json"
# Where the typing rules of a kind of value are explained (config.md's sections).
_KIND_LINKS = {
    "flag": "#flags",
    "auto or flag": "#flags",
    "duration": "#durations",
    "count": "#counts",
    "whole number": "#counts",
    "view name": "#names",
    "list of view names": "#names",
    "list of notifiers": "production-settings.md#notifiers",
    "time zone": "production-settings.md#time-zones-and-dst",
}
_used: list[str] = []


def on_pre_build(config: MkDocsConfig) -> None:
    """Refuse to build with a shipped schema that is not the generated one.

    :param config: the site's config.
    """
    _used.clear()
    shipped = Path(config.docs_dir) / SCHEMA_FILE
    if not shipped.is_file() or shipped.read_text(encoding="utf-8") != schema_text():
        raise PluginError(f"docs/{SCHEMA_FILE} is not the schema the config's model generates; run `make schema`")


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Put the generated config reference where a page has :data:`MARKER`.

    :param markdown: the page's Markdown.
    :param page: the page.
    :param config: the site's config.
    :param files: the site's files.
    """
    if MARKER not in markdown:
        return markdown
    _used.append(page.file.src_uri)
    return markdown.replace(MARKER, config_reference())


def on_post_build(config: MkDocsConfig) -> None:
    """Fail when no page asked for the config reference (a page lost its marker).

    :param config: the site's config.
    """
    if not _used:
        raise PluginError(f"no page holds {MARKER}: the config reference would be missing from the site")


def config_reference() -> str:
    """Markdown tables of every key of the config, from its JSON Schema."""
    definitions = config_schema()["$defs"]
    view, settings = definitions["ViewConfig"], definitions["ViewSettings"]
    own_keys = [key for key in view["properties"] if key not in settings["properties"]]
    return "\n".join(
        [
            "### Keys of one view",
            "",
            "Each item of `views:` has these keys, and those of the next table.",
            "",
            *_table(view, own_keys),
            "",
            "### Keys of a view or of `defaults:`",
            "",
            "Each may be set on a view, or in `defaults:` for every view.",
            "",
            *_table(settings, list(settings["properties"])),
        ]
    )


def _table(definition: dict[str, Any], keys: list[str]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    required = set(definition.get("required", ()))
    for key in keys:
        schema = definition["properties"][key]
        default = "required" if key in required else f"`{_yaml(schema['default'])}`"
        cells = [f'<span id="{key}"></span>`{key}`', _kind(schema["title"]), default, schema["description"]]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return rows


def _kind(title: str) -> str:
    """The key's kind of value, linked to where its typing rules are explained."""
    kind, nullable, _ = title.partition(" or null")
    link = _KIND_LINKS.get(kind)
    shown = f"[{kind}]({link})" if link else kind
    return f"{shown} or `null`" if nullable else shown


def _yaml(value: object) -> str:
    """``value`` as the config file writes it, on one line (``5m``, ``null``, ``[matview]``, ``"@daily"``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).removesuffix("\n...\n").strip()
    return json.dumps(value) if isinstance(value, str) and text != value else text
