"""What may be a notifier: an Airflow ``BaseNotifier`` subclass, or a Python function whose first parameter is the
task context (``def notify(context, **kwargs)``). Any other callable (``os.system``, ``builtins.exec``,
``shutil.rmtree``, ``subprocess.run``, a class that is not a notifier) is refused, saying what is accepted."""

from __future__ import annotations

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config

ACCEPTED = (
    "a notifier is an Airflow BaseNotifier subclass (e.g. airflow.providers.smtp.notifications.smtp.SmtpNotifier) "
    "or a Python function written as def notify(context, **kwargs)"
)


def _problems(path: str) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config({"views": [{"name": "public.a", "on_failure": [{"notifier": path}]}]})
    return raised.value.problems


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("os.system", "a built-in function"),
        ("builtins.exec", "a built-in function"),
        ("builtins.eval", "a built-in function"),
        ("posix.remove", "a built-in function"),
        ("shutil.rmtree", "a function of Python's standard library"),
        ("subprocess.run", "a function of Python's standard library"),
        ("subprocess.call", "a function of Python's standard library"),
        ("os.execv", "a built-in function"),
        ("webbrowser.open", "a function of Python's standard library"),
        ("random.seed", "a callable method object"),
        ("subprocess.Popen", "a class that is not an Airflow BaseNotifier subclass"),
        ("json.JSONDecoder", "a class that is not an Airflow BaseNotifier subclass"),
        ("builtins.print", "a built-in function"),
        ("os.sep", "a str"),
        ("airflow_matview.config.loading.load_config", None),  # first parameter: source
        ("airflow_matview.text.one_line", None),  # first parameter: text
    ],
)
def test_a_callable_that_is_not_a_notifier_is_refused_saying_what_is_accepted(path: str, what: str | None) -> None:
    expected = (
        f"{path} is {what}, not a notifier; {ACCEPTED}"
        if what
        else f"{path} cannot be called with the task context as its first argument; "
        "write it as def notify(context, **kwargs)"
    )
    assert _problems(path) == [f"views[0] (public.a): on_failure: item 1: {expected}"]


@pytest.mark.parametrize(
    "path",
    [
        "devtools.harness.recording_notifier.record_any",
        "devtools.harness.recording_notifier.record_async",
        "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
    ],
)
def test_notifier_classes_and_functions_taking_the_context_are_accepted(path: str) -> None:
    notifier = {"notifier": path, "label": "x"} if "record_async" in path else {"notifier": path}
    if path.endswith("SmtpNotifier"):
        notifier["to"] = "ops@example.com"
    load_config({"views": [{"name": "public.a", "on_failure": [notifier]}]})
