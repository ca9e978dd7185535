from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcast.channels import (
    InvalidChannel,
    literal_prefix,
    matches,
    prefix_is_exact,
    validate_channel,
    validate_pattern,
)

token = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=6)
channel = st.lists(token, min_size=1, max_size=6).map(".".join)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("tasks.*", "tasks.t1", True),
        ("tasks.*", "tasks.t1.extra", False),
        ("tasks.*", "tasks", False),
        ("tasks.>", "tasks.t1", True),
        ("tasks.>", "tasks.t1.tools.x", True),
        ("tasks.>", "tasks", False),
        ("tasks.t1", "tasks.t1", True),
        ("tasks.t1", "tasks.t2", False),
        ("*.t1", "tasks.t1", True),
        ("*", "events", True),
        ("*", "tasks.t1", False),
        (">", "anything.at.all", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.*.>", "a.b.c.d", True),
        ("a.*.>", "a.b", False),
    ],
)
def test_pattern_table(pattern: str, name: str, expected: bool) -> None:
    assert matches(validate_pattern(pattern), validate_channel(name)) is expected


@pytest.mark.parametrize(
    "bad", ["", ".", "a..b", "a.", ".a", "a b", "tasks.*", "tasks.>", "é", "a/b", "x" * 256]
)
def test_invalid_channels(bad: str) -> None:
    with pytest.raises(InvalidChannel):
        validate_channel(bad)


@pytest.mark.parametrize("bad", ["", "a.>.b", ">.a", "a..*", "a.b*", "a.>>", "x" * 256])
def test_invalid_patterns(bad: str) -> None:
    with pytest.raises(InvalidChannel):
        validate_pattern(bad)


def test_max_length_is_accepted() -> None:
    assert validate_channel("x" * 255)


@given(channel)
def test_a_channel_matches_itself(name: str) -> None:
    assert matches(name, name)


@given(channel)
def test_full_wildcard_matches_everything(name: str) -> None:
    assert matches(">", name)


@given(channel, channel)
def test_gt_matches_exactly_the_longer_channels_under_a_prefix(prefix: str, rest: str) -> None:
    assert matches(prefix + ".>", prefix + "." + rest)
    assert not matches(prefix + ".>", prefix)


@given(st.lists(token, min_size=1, max_size=6))
def test_star_replaces_any_one_token(tokens: list[str]) -> None:
    name = ".".join(tokens)
    for index in range(len(tokens)):
        pattern = ".".join("*" if i == index else t for i, t in enumerate(tokens))
        assert matches(pattern, name)
        assert not matches(pattern, name + ".more")


@given(channel, channel)
def test_literal_patterns_match_only_equal_channels(a: str, b: str) -> None:
    assert matches(a, b) == (a == b)


@given(st.lists(st.one_of(token, st.just("*")), min_size=1, max_size=5), channel)
def test_prefix_holds_for_every_match(tokens: list[str], name: str) -> None:
    pattern = ".".join(tokens)
    if matches(pattern, name):
        assert name.startswith(literal_prefix(pattern)) or literal_prefix(pattern) == pattern


@given(st.lists(token, max_size=4), st.booleans(), st.lists(token, min_size=1, max_size=3))
def test_without_star_the_prefix_is_exactly_the_matches(
    head: list[str], tail_wildcard: bool, rest: list[str]
) -> None:
    """What lets the SQLite log trust its SQL range for a pattern (``prefix_is_exact``):
    with no ``*``, a channel matches exactly when it starts with the literal prefix
    (a literal: when it is the pattern)."""
    pattern = ".".join([*head, ">"]) if tail_wildcard else ".".join(head or ["a"])
    assert prefix_is_exact(pattern) and not prefix_is_exact(f"{pattern}.*")
    for name in {".".join([*head, *rest]), ".".join(head or rest), ".".join(rest)}:
        prefix = literal_prefix(pattern)
        if tail_wildcard:
            assert matches(pattern, name) == name.startswith(prefix)
        else:
            assert matches(pattern, name) == (name == pattern)
