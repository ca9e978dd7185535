"""Channel names and NATS-style subscription patterns.

A channel is dot-separated tokens of ``[A-Za-z0-9_-]``, at most 255 characters.
A pattern may also use ``*`` (exactly one token) and ``>`` (one or more trailing
tokens, last position only). Pure functions: no I/O, so the broker's routing
decisions are testable without sockets.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_CHANNEL_LENGTH = 255

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


class InvalidChannel(ValueError):
    """A channel name or pattern that breaks the naming rules."""


def _check_length(name: str, what: str) -> list[str]:
    if not isinstance(name, str) or not name:
        raise InvalidChannel(f"{what} must be a non-empty string")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(f"{what} is longer than {MAX_CHANNEL_LENGTH} characters")
    return name.split(".")


@lru_cache(maxsize=4096)
def validate_channel(name: str) -> str:
    """Return ``name`` if it is a concrete channel (no wildcards), else raise."""
    for token in _check_length(name, "channel"):
        if not _TOKEN.fullmatch(token):
            raise InvalidChannel(f"invalid channel {name!r}: token {token!r} is not [A-Za-z0-9_-]+")
    return name


@lru_cache(maxsize=4096)
def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid subscription pattern, else raise."""
    tokens = _check_length(pattern, "pattern")
    for index, token in enumerate(tokens):
        if token == ">":
            if index != len(tokens) - 1:
                raise InvalidChannel(f"invalid pattern {pattern!r}: '>' must be the last token")
        elif token != "*" and not _TOKEN.fullmatch(token):
            raise InvalidChannel(f"invalid pattern {pattern!r}: bad token {token!r}")
    return pattern


def is_literal(pattern: str) -> bool:
    """True when a pattern has no wildcard, so it names exactly one channel."""
    return "*" not in pattern and ">" not in pattern


def literal_prefix(pattern: str) -> str:
    """The channel prefix every match shares (up to the first wildcard token)."""
    prefix: list[str] = []
    for token in pattern.split("."):
        if token in ("*", ">"):
            return ".".join(prefix) + "." if prefix else ""
        prefix.append(token)
    return pattern


def prefix_is_exact(pattern: str) -> bool:
    """Whether the channels that start with ``literal_prefix(pattern)`` are exactly the
    ones the (valid) pattern matches: a literal, ``>`` or ``a.b.>`` (no ``*``; a valid
    channel has no empty token, so ``a.b.`` is always followed by one more)."""
    return "*" not in pattern


def matches(pattern: str, channel: str) -> bool:
    """Whether a (valid) pattern matches a (valid) concrete channel."""
    if is_literal(pattern):
        return pattern == channel
    return _matches_tokens(tuple(pattern.split(".")), tuple(channel.split(".")))


def _matches_tokens(pattern: tuple[str, ...], channel: tuple[str, ...]) -> bool:
    for index, token in enumerate(pattern):
        if token == ">":
            return len(channel) > index
        if index >= len(channel):
            return False
        if token != "*" and token != channel[index]:
            return False
    return len(pattern) == len(channel)


def validate_task_id(task_id: str) -> str:
    """Return ``task_id`` if it can name a task (one channel token: ``tasks.<taskId>``
    is its channel), else raise. For doors that take a task id outside an event."""
    if not isinstance(task_id, str) or not _TOKEN.fullmatch(task_id):
        raise InvalidChannel(f"invalid task id {task_id!r}: not [A-Za-z0-9_-]+")
    validate_channel(task_channel(task_id))  # its length
    return task_id


def task_channel(task_id: str) -> str:
    """The channel a task's events go to by default."""
    return f"tasks.{task_id}"


def control_channel(task_id: str) -> str:
    """The channel a task follows for commands (approve, deny, reply, abort, message)."""
    return f"control.{task_id}"


TASK_NAMESPACES = ("tasks", "control")


def task_of_channel(channel: str) -> tuple[str, str] | None:
    """``(namespace, taskId)`` for ``tasks.<taskId>[.…]`` and ``control.<taskId>[.…]``.

    A task's identity comes from its channel, which publish scopes protect, never
    from a payload field anyone can write (docs/security.md, forged task events).
    """
    namespace, _, rest = channel.partition(".")
    if namespace not in TASK_NAMESPACES or not rest:
        return None
    return namespace, rest.partition(".")[0]
