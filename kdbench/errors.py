"""Exceptions with one-line messages: the CLI prints them and exits non-zero."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class KDBenchError(Exception):
    """Bad input or state the user can fix. The CLI prints the message and exits with code 2."""

    exit_code = 2


class ConfigError(KDBenchError):
    """A configuration value is invalid (names the value and the valid choices)."""


class UnknownNameError(ConfigError):
    """A name not in a registry: lists the close matches and the valid choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str = ""):
        self.kind, self.name = kind, name
        self.choices = sorted(choices)
        super().__init__(unknown_name_message(kind, name, self.choices, hint))


class DataError(KDBenchError):
    """Data missing or unreadable."""


class StoreError(KDBenchError):
    """The results store cannot be used as asked (missing, unreadable, unwritable, busy)."""


class DamagedStoreError(StoreError):
    """A file in the results store is damaged: corrupt, truncated, a symbolic or hard link, not
    a regular file, or not matching the run it is filed under. Exits with code 1: the command
    was fine, the store is not (``teacher rm --force``, ``run --force`` or removing the named
    file is the way out)."""

    exit_code = 1


class PluginError(KDBenchError):
    """A plugin misbehaved at registration (e.g. two plugins claim one name)."""


class TrainingError(KDBenchError):
    """Training could not go on (e.g. a NaN loss). Exits with code 1: the input was fine."""

    exit_code = 1


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The ``n`` choices most similar to ``name``; equally similar ones sharing a longer prefix
    with it first (``resnet21`` suggests resnet20 before resnet32)."""
    def score(choice: str) -> tuple[float, int]:
        prefix = len(os.path.commonprefix([name, choice]))
        return difflib.SequenceMatcher(None, name, choice).ratio(), prefix

    candidates = difflib.get_close_matches(name, list(choices), n=max(n, 20), cutoff=0.5)
    return sorted(candidates, key=score, reverse=True)[:n]


def unknown_name_message(kind: str, name: str, choices: list[str], hint: str = "") -> str:
    close = close_matches(name, choices)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; did you mean {', '.join(close)}?"
    shown = choices if len(choices) <= 40 else choices[:40] + [f"... ({len(choices)} in all)"]
    msg += f" (valid: {', '.join(shown)})" if choices else " (none registered)"
    if hint:
        msg += f"; {hint}"
    return msg
