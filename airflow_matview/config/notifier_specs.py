"""The ``on_failure``, ``on_retry``, ``on_success`` and ``on_stale`` keys: notifiers by dotted path, with arguments.

At parse time a notifier's path is imported (once per path per process: importing a notifier module touches no
database or network) and its arguments are checked against its signature; nothing is instantiated. The notifier
is built when the event happens (:mod:`airflow_matview.alerting.notify`). A module that does not finish importing
within :data:`IMPORT_TIMEOUT_SECONDS` is reported as such, and one that raises anything while imported (even
``SystemExit`` or ``KeyboardInterrupt``) as that module's error: neither hangs nor ends ``validate`` or the parsing
of the DAG file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_matview.config import notifier_secrets
from airflow_matview.config.notifier_secrets import credential_arguments

if TYPE_CHECKING:
    from types import ModuleType

# The longest wait for a notifier module to import: far above a provider's import on a busy machine, and below the
# dag-processor's limit for a whole DAG file (dagbag_import_timeout, 30 s by default), so that its message is ours.
IMPORT_TIMEOUT_SECONDS = 15.0
_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
EXAMPLE = "{notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier, to: ops@example.com}"
ACCEPTED = (
    "a notifier is an Airflow BaseNotifier subclass (e.g. airflow.providers.smtp.notifications.smtp.SmtpNotifier) "
    "or a Python function written as def notify(context, **kwargs)"
)


@dataclass(frozen=True)
class NotifierSpec:
    """One configured notifier.

    :param path: dotted path of a ``BaseNotifier`` subclass or of a callable taking the context.
    :param kwargs: its arguments, as written (Jinja templates are rendered by notifiers when they run).
    """

    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The spec as the config writes it (JSON-serialisable, for a Deadline Alert's callback kwargs)."""
        return {"notifier": self.path, **self.kwargs}


@dataclass(frozen=True)
class LoadedNotifier:
    obj: Any
    is_notifier_class: bool
    accepted: frozenset[str] | None  # None: any keyword
    required: frozenset[str]


def parse_notifiers(value: object) -> tuple[NotifierSpec, ...]:
    """A list of notifier mappings, each validated; every bad item is reported, each naming its path.

    :param value: the value given in the config.
    :raises ValueError: listing every bad item.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"use a list of notifiers, e.g. [{EXAMPLE}]")
    specs: list[NotifierSpec] = []
    problems: list[str] = []
    for index, item in enumerate(value):
        try:
            specs.append(parse_notifier(item))
        except ValueError as error:
            problems.append(f"item {index + 1}: {error}")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(specs)


def parse_notifier(item: object) -> NotifierSpec:
    """One notifier mapping: ``notifier:`` (importable) and the arguments it accepts.

    :raises ValueError: naming the path and what is wrong.
    """
    if not isinstance(item, Mapping):
        # The value itself is not repeated: a stray URL here may hold a password.
        raise ValueError(f"a {type(item).__name__} is not a notifier; write a mapping such as {EXAMPLE}")
    kwargs = {str(key): value for key, value in item.items()}
    path = kwargs.pop("notifier", None)
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"notifier: is missing; give the dotted path of a BaseNotifier subclass, e.g. {EXAMPLE}")
    path = path.strip()
    if not _DOTTED_PATH.fullmatch(path):
        may_hold_secret = "://" in path or "@" in path
        shown = "this value (not repeated here, as it may hold a credential)" if may_hold_secret else repr(path)
        raise ValueError(
            f"notifier: {shown} is not a dotted path; write package.module.Name, e.g. "
            "airflow.providers.smtp.notifications.smtp.SmtpNotifier (a webhook URL belongs in an Airflow connection)"
        )
    if secrets := credential_arguments(kwargs):
        raise ValueError(
            f"{path}: {', '.join(secrets)} may hold a credential (not repeated here), which would be stored in "
            "plain text in the DAG and in Airflow's database (its trigger table for on_stale); "
            + notifier_secrets.ADVICE
        )
    if unplain := [key for key, value in kwargs.items() if not _is_plain(value)]:
        raise ValueError(
            f"{path}: {', '.join(unplain)}: YAML reads this as a date, time or binary value, which Airflow cannot "
            "pass on to a notifier; quote it to keep it as text"
        )
    target = _load(path)
    if isinstance(target, str):
        raise ValueError(target)
    if target.is_notifier_class and (broken := _template_problems(target.obj, kwargs)):
        raise ValueError(f"{path}: {'; '.join(broken)}")
    unknown = sorted(set(kwargs) - target.accepted) if target.accepted is not None else []
    if unknown:
        allowed = ", ".join(sorted(target.accepted or ())) or "no arguments"
        raise ValueError(f"{path} does not accept {', '.join(unknown)}; it accepts {allowed}")
    missing = sorted(target.required - set(kwargs))
    if missing:
        raise ValueError(f"{path} needs {', '.join(missing)}")
    return NotifierSpec(path, kwargs)


@functools.lru_cache(maxsize=256)
def _load(path: str) -> LoadedNotifier | str:
    """Import ``path`` and read what arguments it takes, or say why it cannot be used (cached either way: a
    config repeats the same notifier for every view)."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        return f"{path!r} is not a dotted path; write package.module.Name"
    module = _import(module_name)
    if isinstance(module, BaseException):
        if isinstance(module, ImportError):
            return f"{path} cannot be imported ({module}); install its provider or fix the path"
        # A broken module must not hide the other problems of the file, nor end the command as if it were its own.
        kind = type(module).__name__
        reason = f"{kind}: {module}" if str(module) else f"{kind}, raised by module {module_name} while imported"
        return f"{path} cannot be imported ({reason})"
    if module is None:
        return (
            f"{path} cannot be imported: module {module_name} did not finish importing within "
            f"{IMPORT_TIMEOUT_SECONDS:g} s (does it connect somewhere, or wait for something, when imported?); "
            "fix the module"
        )
    obj = getattr(module, attribute, None)
    if obj is None:
        return f"{path} cannot be imported (module {module_name} has no {attribute})"
    from airflow.sdk import BaseNotifier

    if inspect.isclass(obj) and issubclass(obj, BaseNotifier):
        accepted, required = _class_arguments(obj)
        return LoadedNotifier(obj, True, accepted, required)
    if not inspect.isfunction(obj) or _in_standard_library(obj):
        return f"{path} is {_what(obj)}, not a notifier; {ACCEPTED}"
    signature = inspect.signature(obj)
    if not _takes_context(signature):
        return (
            f"{path} cannot be called with the task context as its first argument; "
            "write it as def notify(context, **kwargs)"
        )
    accepted, required = _arguments(signature, skip_first=True)
    return LoadedNotifier(obj, False, accepted, required)


def _what(obj: object) -> str:
    """What ``obj`` is, in a few words, for a message refusing it as a notifier."""
    if inspect.isclass(obj):
        return "a class that is not an Airflow BaseNotifier subclass"
    if inspect.isbuiltin(obj) or inspect.ismethoddescriptor(obj):
        return "a built-in function"
    if inspect.isfunction(obj):
        return "a function of Python's standard library"
    if callable(obj):
        return f"a callable {type(obj).__name__} object"
    return f"a {type(obj).__name__}"


def _in_standard_library(function: Any) -> bool:
    return str(getattr(function, "__module__", "")).partition(".")[0] in sys.stdlib_module_names


@functools.lru_cache(maxsize=256)
def _import(module_name: str) -> ModuleType | BaseException | None:
    """The module ``module_name``, imported in a thread of its own; what its import raised (whatever it is); or
    ``None`` when it did not finish within :data:`IMPORT_TIMEOUT_SECONDS` (the thread is left to it: a daemon, which
    does not keep the process alive). Cached, so that a module is waited for once."""
    loaded = sys.modules.get(module_name)
    if loaded is not None and not getattr(getattr(loaded, "__spec__", None), "_initializing", False):
        return loaded
    outcome: list[ModuleType | BaseException] = []

    def import_it() -> None:
        try:
            outcome.append(importlib.import_module(module_name))
        except BaseException as error:  # the module's own, reported as its problem (a real Ctrl-C hits the waiter)
            outcome.append(error)

    thread = threading.Thread(target=import_it, name=f"import {module_name}", daemon=True)
    thread.start()
    thread.join(IMPORT_TIMEOUT_SECONDS)
    return outcome[0] if outcome else None


def _takes_context(signature: inspect.Signature) -> bool:
    """Whether the function's first parameter is ``context``, passed positionally, as Airflow calls a callback."""
    first = next(iter(signature.parameters.values()), None)
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return first is not None and first.name == "context" and first.kind in positional


def _is_plain(value: object) -> bool:
    """Whether ``value`` is text, a number, a boolean, null, or a list or mapping of those (what a Deadline
    Alert's callback arguments can carry to the triggerer)."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    return False


def _template_problems(cls: type, kwargs: Mapping[str, Any]) -> list[str]:
    """The template fields among ``kwargs`` whose Jinja does not parse (they would fail when the event happens,
    and the notification would be lost)."""
    fields = set(getattr(cls, "template_fields", ()))
    problems = []
    for name, value in kwargs.items():
        for text in _texts(value) if name in fields else ():
            if error := _syntax_error(text):
                problems.append(f"{name}: the Jinja template does not parse ({error})")
                break
    return problems


@functools.lru_cache(maxsize=1024)
def _syntax_error(text: str) -> str | None:
    """Why ``text`` is not a Jinja template Airflow can render, if it is not (cached: a config repeats its
    notifiers for every view)."""
    import jinja2

    if "{" not in text:
        return None
    try:
        _jinja().parse(text)
    except jinja2.TemplateSyntaxError as error:
        return f"{error.message}, line {error.lineno}"
    return None


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _texts(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _texts(item)]
    return []


@functools.lru_cache(maxsize=1)
def _jinja() -> Any:
    """A Jinja environment parsing as Airflow's template environment does (with its ``do`` extension)."""
    import jinja2.sandbox

    return jinja2.sandbox.SandboxedEnvironment(extensions=["jinja2.ext.do"])


def loaded_notifier(path: str) -> LoadedNotifier:
    """The loaded notifier (validated when the config was read).

    :raises ValueError: when it can no longer be loaded.
    """
    target = _load(path)
    if isinstance(target, str):
        raise ValueError(target)
    return target


def _class_arguments(cls: type) -> tuple[frozenset[str] | None, frozenset[str]]:
    """Named ``__init__`` arguments along the MRO, following ``**kwargs`` passed on to the parent class."""
    accepted: set[str] = set()
    required: frozenset[str] | None = None
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        if klass is object:
            return None, required or frozenset()  # **kwargs reach object: anything goes until it runs
        names, needed = _arguments(inspect.signature(vars(klass)["__init__"]), skip_first=True)
        required = needed if required is None else required
        if names is not None:
            accepted |= names
            break
        accepted |= _named(inspect.signature(vars(klass)["__init__"]), skip_first=True)
    accepted.discard("context")  # BaseNotifier's own, filled by Airflow
    return frozenset(accepted), (required or frozenset()) - {"context"}


def _named(signature: inspect.Signature, *, skip_first: bool) -> frozenset[str]:
    parameters = list(signature.parameters.values())[1 if skip_first else 0 :]
    return frozenset(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _arguments(signature: inspect.Signature, *, skip_first: bool) -> tuple[frozenset[str] | None, frozenset[str]]:
    """The keyword arguments a callable accepts (``None``: any, it has ``**kwargs``) and those it requires;
    ``skip_first`` leaves out ``self`` or the context."""
    parameters = list(signature.parameters.values())[1 if skip_first else 0 :]
    names = None if any(p.kind is p.VAR_KEYWORD for p in parameters) else _named(signature, skip_first=skip_first)
    required = frozenset(
        p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    return names, required
