"""Reading the config file: UTF-8 bytes to Python data with PyYAML's safe loader, refusing what YAML lets slip.

PyYAML keeps the last of two equal keys and expands aliases as deep as they nest; here a repeated key at any level
is an error naming both lines, and aliases that would expand the document beyond :data:`MAX_ALIAS_EXPANSION` nodes
are refused before anything is built. Each error is one line naming the line and column, never ``<unicode string>``.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from airflow_matview.exceptions import UnreadableConfigFileError
from airflow_matview.text import yaml_single_quoted

if TYPE_CHECKING:
    from pathlib import Path

# The largest config file read: far above any real one (a few hundred bytes per view), and a bound on what a file
# that never ends (/dev/zero, a log appended to while read) may cost.
MAX_CONFIG_BYTES = 10 * 1024 * 1024
# What a path that is not a regular file is, by the file type bits of its mode.
_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
# PyYAML's safe loader in C (libyaml) when PyYAML has it: same constructors, several times faster.
_BASE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# How many nodes aliases may add to the document: far above any real use (a `<<: *common` block in each of
# thousands of views), far below the billions of an alias bomb.
MAX_ALIAS_EXPANSION = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Plain values are typed by YAML 1.2's core schema, not PyYAML's YAML 1.1: only true and false are booleans (yes, no,
# on and off are text), and there are no sexagesimal (1:30 = 90), leading-zero octal (010 = 8), underscored (1_0),
# timestamp or `=` values, each of which YAML 1.1 would silently turn into something else.
_CORE_SCHEMA: list[tuple[str, str, list[str]]] = [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^<<$", ["<"]),
]
_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}
# A YAML value that starts with a double-quoted SQL identifier followed by more of the name: "Sales"."Q1" or "A".b
# A value starting with a character YAML reserves or reads as an alias: schedule: @daily, schedule: */5 * * * *
_RESERVED_START = re.compile(r"^\s*(?:-\s+)*(?:([\w-]+)\s*:\s+)?([@`][^#]*?|\*[^\w#][^#]*?)\s*(?:#.*)?$")
_SQL_QUOTED_VALUE = re.compile(r'^(\s*(?:-\s+)*(?:[\w-]+\s*:\s*)?\[?\s*)("(?:[^"]|"")*"\s*\.[^#\]]*?)\s*(?:[\],].*)?$')


def read_config_file(path: str | Path) -> object:
    """The file's data, read as UTF-8 whatever the locale.

    :param path: the config file.
    :raises UnreadableConfigFileError: unreadable, not UTF-8, not YAML, a duplicate key, or an alias bomb.
    """
    raw = _read_regular_file(path)
    if encoding := next((name for bom, name in _BOMS.items() if raw.startswith(bom)), None):
        raise UnreadableConfigFileError(
            [f"the file is {encoding} text (it starts with a {encoding} byte-order mark); save it as UTF-8"]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UnreadableConfigFileError(
            [
                f"line {line}, column {column}: byte 0x{raw[exc.start]:02x} is not UTF-8; the file must be UTF-8 "
                "text (e.g. `iconv -f latin1 -t utf-8`, or save it as UTF-8 in your editor)"
            ]
        ) from None
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise UnreadableConfigFileError([_describe_yaml_error(exc, text)]) from None
    except yaml.reader.ReaderError as exc:
        raise UnreadableConfigFileError([_describe_reader_error(exc, text)]) from None
    except yaml.YAMLError as exc:
        raise UnreadableConfigFileError([f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    finally:
        loader.dispose()


def _read_regular_file(path: str | Path) -> bytes:
    """The bytes of ``path``, which must be a regular file (after symbolic links) of at most
    :data:`MAX_CONFIG_BYTES`: a named pipe would block the read forever, a device would never end.

    :raises UnreadableConfigFileError: it cannot be opened, is not a regular file, or is too large.
    """
    try:
        # Non-blocking: opening a named pipe waits for a writer otherwise. The type is checked on the open file,
        # so that nothing can be swapped in after the check.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableConfigFileError([_not_regular(os.stat, path) or _cannot_read(exc)]) from None
    try:
        if problem := _not_regular(os.fstat, fd):
            raise UnreadableConfigFileError([problem])
        with os.fdopen(os.dup(fd), "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UnreadableConfigFileError([_cannot_read(exc)]) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise UnreadableConfigFileError(
            [
                f"cannot read the file: it is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB, far more than a "
                "config of thousands of views; is it the right file?"
            ]
        )
    return raw


def _not_regular(stat_of: Any, target: Any) -> str | None:
    """Why ``target`` (a path for :func:`os.stat`, a descriptor for :func:`os.fstat`) is not a file to read, or
    ``None`` when it is a regular file, or cannot be looked at."""
    try:
        mode = stat_of(target).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"cannot read the file: {os.strerror(errno.EISDIR)}"
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")
    return f"cannot read the file: it is {kind}, not a regular file; give the path of the YAML file itself"


def _cannot_read(exc: OSError) -> str:
    return f"cannot read the file: {exc.strerror or exc}"


class _Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """The safe loader, refusing duplicate keys and alias bombs before constructing anything.

    :param text: the document.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._may_alias = "*" in text  # without one, the node graph is a tree: a quicker walk will do

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError):  # e.g. `!!int abc`, `!!bool maybe`
            tag = node.tag.removeprefix("tag:yaml.org,2002:")
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} cannot be read as the type its tag !!{tag} names", node.start_mark
            ) from None

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith(("0x", "0o")):
            return int(text[2:], 16 if text[1] == "x" else 8)
        return int(text, 10)  # 010 is ten, as in YAML 1.2 (YAML 1.1 reads it as octal 8)

    def construct_document(self, node: Node) -> Any:
        nodes = _walk(node) if self._may_alias else _walk_tree(node)
        problems = _duplicate_keys(nodes)
        expanded = _expanded_size(nodes) if self._may_alias else len(nodes)
        if expanded - len(nodes) > MAX_ALIAS_EXPANSION:
            problems.append(
                f"aliases (*name) expand the document to {expanded:,} nodes; they may add at "
                f"most {MAX_ALIAS_EXPANSION:,}: write the values out, or use fewer nested aliases"
            )
        if problems:
            raise UnreadableConfigFileError(problems)
        return super().construct_document(node)


_Loader.yaml_implicit_resolvers = {}
for _name, _pattern, _first in _CORE_SCHEMA:
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_name}", re.compile(_pattern), _first)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _walk(root: Node) -> list[Node]:
    """Every node of the document once (aliases included once), each after all of its children."""
    done: set[int] = set()
    open_: set[int] = set()
    order: list[Node] = []
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            open_.discard(id(node))
            done.add(id(node))
            order.append(node)
            continue
        if id(node) in done:
            continue
        if id(node) in open_:
            raise UnreadableConfigFileError(
                [f"line {node.start_mark.line + 1}: an alias (*name) refers to a value that contains it; remove it"]
            )
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in done)
    return order


def _walk_tree(root: Node) -> list[Node]:
    """Every node of a document without aliases (a tree), in no particular order."""
    order: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return order


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _expanded_size(nodes: list[Node]) -> int:
    """How many nodes the document holds once every alias is expanded, computed once per distinct node."""
    sizes: dict[int, int] = {}
    for node in nodes:
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
    return sizes[id(nodes[-1])]


def _duplicate_keys(nodes: list[Node]) -> list[str]:
    """Each key written twice in one mapping (at any depth), naming both lines; merged keys (``<<:``) may repeat."""
    problems: list[str] = []
    for node in nodes:
        if not isinstance(node, MappingNode):
            continue
        first_line: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            line = key.start_mark.line + 1
            if (key.tag, key.value) not in first_line:
                first_line[key.tag, key.value] = line
            else:
                seen = first_line[key.tag, key.value]
                problems.append(
                    f"line {line}: key {key.value!r} is repeated (first at line {seen}); YAML would keep only the "
                    "last one: write each key once"
                )
    return sorted(problems, key=lambda problem: int(problem.split(":")[0].removeprefix("line ")))


def _describe_yaml_error(exc: yaml.MarkedYAMLError, text: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = exc.problem or exc.context or "unreadable"
    if exc.context and exc.problem:
        what += f" ({exc.context}" + (f" at line {exc.context_mark.line + 1})" if exc.context_mark else ")")
    message = f"{where}not valid YAML: {what}"
    lines = text.splitlines()
    candidates = [mark.line] if mark else []
    if exc.context_mark:
        candidates.append(exc.context_mark.line)
    for index in candidates:
        if 0 <= index < len(lines) and (hint := quoting_hint(lines[index])):
            return f"{message}. {hint}"
    return message


def _describe_reader_error(exc: yaml.reader.ReaderError, text: str) -> str:
    """A character YAML does not allow, by line and column (PyYAML names only a position in ``<unicode string>``)."""
    position = exc.position
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    message = f"line {line}, column {column}: not valid YAML: the control character U+{ord(char):04X} is not allowed"
    if char == "\x00":
        return message + "; a file with NUL characters is often UTF-16 text: save it as UTF-8"
    return message + "; remove it"


def quoting_hint(line: str) -> str | None:
    """For a YAML line whose value YAML cannot read as written, how to write it instead."""
    if unquoted := _RESERVED_START.match(line):
        key, value = unquoted.group(1), unquoted.group(2).rstrip()
        return (
            f"A value that starts with {value[0]} must be quoted in YAML: "
            f"{key + ': ' if key else ''}{yaml_single_quoted(value)}"
        )
    match = _SQL_QUOTED_VALUE.match(line)
    if match is None:
        return None
    name = match.group(2)
    return (
        f"A value that starts with a double quote is a YAML string, so YAML cannot read {name} as written; "
        f"wrap the whole SQL name in single quotes to keep its double quotes: {yaml_single_quoted(name)}"
    )
