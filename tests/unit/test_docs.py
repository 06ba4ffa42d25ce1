"""The docs' examples work: every YAML config validates (with ``load_config`` and against the JSON Schema), every
Python example runs, the README's links lead to files, the generated config reference lists every key, and the
changelog lists every module path kept importable.

A fenced ``yaml`` block is a config example unless its title names another file (``yaml title="values.yaml"``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
import pytest

from airflow_matview.config import ViewConfig, load_config
from airflow_matview.config.schema import config_schema
from airflow_matview.config.yaml_reader import read_config_file

if TYPE_CHECKING:
    from types import ModuleType


def _repo() -> Path:
    """The repository's root: the nearest folder above this file holding pyproject.toml."""
    return next(folder for folder in Path(__file__).resolve().parents if (folder / "pyproject.toml").is_file())


REPO = _repo()
PAGES = sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md", REPO / "CHANGELOG.md"])
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)(?P<info>[^\n]*)$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int
    lang: str
    info: str
    code: str

    @property
    def label(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, dedented (a block inside a list item is indented)."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None or not opening["lang"]:
            index += 1
            continue
        indent, body = opening["indent"], []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index].removeprefix(indent))
            index += 1
        code = "\n".join(body) + "\n"
        blocks.append(Block(page, index - len(body), opening["lang"], opening["info"].strip(), code))
        index += 1
    return blocks


BLOCKS = [block for page in PAGES for block in code_blocks(page)]


def _is_config(block: Block) -> bool:
    title = re.search(r'title="([^"]*)"', block.info)
    return block.lang == "yaml" and (title is None or "matviews" in title[1])


CONFIGS = [block for block in BLOCKS if _is_config(block)]
PYTHON = [block for block in BLOCKS if block.lang == "python"]


def test_the_pages_have_examples() -> None:
    assert len(CONFIGS) >= 8
    assert len(PYTHON) >= 4


@pytest.mark.parametrize("block", CONFIGS, ids=[block.label for block in CONFIGS])
def test_config_example_validates(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(block.code, encoding="utf-8")
    config = load_config(path)
    assert config.views
    errors = [
        error.message for error in jsonschema.Draft202012Validator(config_schema()).iter_errors(read_config_file(path))
    ]
    assert errors == []


@pytest.mark.parametrize("block", PYTHON, ids=[block.label for block in PYTHON])
def test_python_example_runs(block: Block) -> None:
    tree = ast.parse(block.code, filename=block.label)
    for node in ast.walk(tree):  # every import resolves, also in a branch that the example does not run
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    exec(compile(tree, block.label, "exec"), {"__name__": "docs_example"})


def test_every_yaml_block_that_is_not_a_config_names_its_file() -> None:
    others = [block for block in BLOCKS if block.lang == "yaml" and block not in CONFIGS]
    assert all('title="' in block.info for block in others)
    assert [block.label for block in others] == ["docs/deployment.md:19"]


def test_readme_links_lead_to_files() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if "://" not in target]
    assert local
    assert [target for target in local if not (REPO / target).exists()] == []


def test_readme_is_a_landing_page_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make demo" in text
    assert "\nmake test " in text  # .ci/run runs the README's test command


def test_every_page_is_in_the_nav() -> None:
    mkdocs_yml = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {page.name for page in (REPO / "docs").glob("*.md")}
    assert {page for page in pages if f": {page}" not in mkdocs_yml} == set()


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_config_reference_lists_every_key_with_its_description() -> None:
    reference = _hooks().config_reference()
    for key, field in ViewConfig.model_fields.items():
        assert f'<span id="{key}"></span>`{key}`' in reference
        assert field.description and field.description in reference
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8").count(_hooks().MARKER) == 1


def test_the_changelog_lists_every_module_path_kept_importable() -> None:
    from airflow_matview.legacy_paths import MOVED_MODULES

    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert [old for old, new in MOVED_MODULES.items() if f"`{old}` → `{new}`" not in changelog] == []
