"""Which notifier arguments would put a credential into the config file (and so into the DAG and, for
``on_stale``, into Airflow's ``trigger`` table, in plain text).

The rule is about where a credential can sit, not about what it looks like: each of these must come from an Airflow
Connection or Variable, through a ``{{ conn.<conn_id>.<field> }}`` or ``{{ var.value.<name> }}`` (``var.json``)
reference, or the notifier's ``*_conn_id`` argument:

- a key named like a credential (``password``, ``token``, ``secret``, ``api_key``, ``Cookie``, ``X-Auth-Token``,
  ``webhook``...), at any depth;
- any header value: everything under a key named like ``headers``, and a ``Name: value`` header line;
- a URL with a user (``https://user:pw@``), a query (``?key=``, ``?sig=``) or a random-looking path segment (the
  token of a Slack, Discord, Teams or Telegram webhook URL);
- a random-looking word anywhere (16+ letters and digits, 24+ characters, a GUID): a routing key, an API key.

The text of a reference is left out before looking, so ``https://x/?token={{ var.value.t }}`` is fine, and a
Jinja string literal is text like any other.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

ADVICE = (
    "take it from Airflow: pass the notifier's connection id (a *_conn_id argument), or write "
    "{{ conn.<conn_id>.password }} or {{ var.value.<name> }} in one of its template fields"
)

# A reference to a Connection or a Variable: {{ conn.x.password }}, {{ var.value.x | trim }}, {{ var.json.x.y }},
# {{ conn.get('x').host }}, {{ var.value.get('x', '') }}.
_REFERENCE = re.compile(r"\{\{-?\s*(?:conn|var\s*\.\s*(?:value|json))\s*[.\[][^{}]*?-?\}\}")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_CREDENTIAL_WORDS = frozenset(
    {
        "apikey",
        "authorization",
        "bearer",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "privatekey",
        "secret",
        "secrets",
        "signature",
        "token",
        "tokens",
        "webhook",
    }
)
# "<word> key" pairs that name a credential (api_key, X-API-Key, routingKey); dedup_key and the like do not.
_KEY_KINDS = frozenset(
    {"access", "api", "app", "auth", "client", "encryption", "integration", "license", "private", "routing"}
    | {"secret", "service", "signing", "subscription", "webhook"}
)
# What a reference stands for while the text around it is read (a private-use character: no one writes it).
_REFERENCED = "\ue000"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
# A query or fragment parameter with a value written in the file: ?key=abc, &sig=abc, #access_token=abc.
_PARAMETER = re.compile(r"[?&#;][A-Za-z0-9_.~%-]+=([^&#;\s\"'<>`]*)")
_HEADER_LINE = re.compile(r"(?:^|[\s'\"])([A-Za-z][A-Za-z0-9-]*)\s*:\s+[^\s\ue000]")
_SCHEME_WORD = re.compile(r"\b(?:Bearer|Basic|Token)\s+([A-Za-z0-9._~+/=-]{6,})")
_RUN = re.compile(r"[A-Za-z0-9]+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9_-]{20,}")
_HEX_RUN = re.compile(r"(?:[0-9A-Fa-f]-?){16,}")


def credential_arguments(kwargs: Mapping[str, object]) -> list[str]:
    """The arguments that would put a credential into the config, each as ``name (why)``; nothing is repeated."""
    found = []
    for name, value in kwargs.items():
        if why := _why(value, name, in_headers=False):
            found.append(f"{name} ({why})")
    return found


def is_credential_name(name: str) -> bool:
    """Whether a key names a credential: ``smtp_password``, ``X-API-Key``, ``apiKey``, ``Cookie``, ``webhook_url``."""
    words = [word.lower() for word in _WORD_SPLIT.split(name) if word]
    return any(word in _CREDENTIAL_WORDS for word in words) or any(
        second == "key" and first in _KEY_KINDS for first, second in itertools.pairwise(words)
    )


def _why(value: object, name: str, *, in_headers: bool) -> str | None:
    """Why ``value`` (found under the key ``name``) would hold a credential, or ``None``."""
    in_headers = in_headers or "header" in name.lower()
    if isinstance(value, Mapping):
        return next((why for key, item in value.items() if (why := _why(item, str(key), in_headers=in_headers))), None)
    if isinstance(value, list | tuple):
        return next((why for item in value if (why := _why(item, name, in_headers=in_headers))), None)
    if not isinstance(value, str) or not value.strip():
        return None
    referenced = _REFERENCE.search(value) is not None
    if in_headers and not referenced:
        return "a header value"
    if is_credential_name(name) and not referenced:
        return "named like a credential"
    return text_problem(_REFERENCE.sub(_REFERENCED, value))


def text_problem(text: str) -> str | None:
    """What in ``text`` may be a credential written in the file, or ``None`` (each reference to a Connection or a
    Variable replaced by :data:`_REFERENCED`)."""
    if any(_url_holds_secret(url) for url in _URL.findall(text)) or _literal_parameter(text):
        return "a URL with a user, a query or a token in its path"
    if "hooks.slack.com/services/" in text.lower():
        return "a URL with a user, a query or a token in its path"
    if any(is_credential_name(header) for header in _HEADER_LINE.findall(text)):
        return "a header or credential written in text"
    if any(_scheme_credential(word) for word in _SCHEME_WORD.findall(text)):
        return "a header or credential written in text"
    if random_looking(text):
        return "a random-looking value, such as a key or a token"
    return None


def _url_holds_secret(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed [ in the host: not a URL anyone could use, but it may hold one
        return True
    user = parts.netloc.rpartition("@")[0]
    return bool(user.replace(_REFERENCED, "").strip(":")) or random_looking(parts.path)


def _literal_parameter(text: str) -> bool:
    """Whether a query or fragment parameter has a value written in the file (not only references)."""
    return any(value.replace(_REFERENCED, "") for value in _PARAMETER.findall(text))


def _scheme_credential(word: str) -> bool:
    """Whether the word after ``Bearer``, ``Basic`` or ``Token`` reads like a credential rather than prose
    (``Basic authentication`` is prose; ``Bearer hunter2`` and ``Basic dXNlcjpwYXNz`` are not)."""
    return any(c.isdigit() or c in "+/=._~-" for c in word) or any(c.isupper() for c in word[1:])


def random_looking(text: str) -> bool:
    """Whether ``text`` holds a word that reads like a key or a token rather than a name: 16 or more letters and
    digits mixed, 24 or more in a row, 20 or more of base64 with capitals, small letters and digits, or 16 or more
    hex digits with letters and digits (a GUID)."""
    for run in _RUN.findall(text):
        if len(run) >= 24 or (len(run) >= 16 and _has_letter_and_digit(run)):
            return True
    for run in _BASE64_RUN.findall(text):
        if any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run):
            return True
    return any(_has_letter_and_digit(run.replace("-", "")) for run in _HEX_RUN.findall(text))


def _has_letter_and_digit(text: str) -> bool:
    return any(c.isalpha() for c in text) and any(c.isdigit() for c in text)
