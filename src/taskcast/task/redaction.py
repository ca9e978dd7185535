"""Secrets that pass through a task (keys in command output, tokens in files) are
replaced by ``[REDACTED]`` in every event the task emits. Users extend the list.

The token formats come from a maintained rule set — the regex plugins of Yelp's
``detect-secrets`` (AWS, GitHub, GitLab, Slack, Stripe, SendGrid, Twilio, JWTs,
credentials in URLs, …) — so new formats arrive with its releases. Taskcast adds what
that set does not cover and a redactor needs: whole PEM key blocks, ``key = value``
assignments in any quoting (JSON, YAML, env, INI), ``Authorization`` headers, Google
API keys, newer OpenAI/Anthropic/Stripe key shapes, and the values of the agent's own
secret environment variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

# detect-secrets plugins left out: IP addresses are no secrets, and the private-key
# plugin matches only the BEGIN line (the whole block is hidden below instead).
_SKIPPED_PLUGINS = frozenset({"Public IP (ipv4)", "Private Key"})

DEFAULT_PATTERNS = (
    # Whole key blocks (the groups here never capture: the whole match is the secret).
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
    r"\bsk-(?:ant-[a-z0-9]+-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",  # Stripe (current lengths)
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
)
# `password=…`, `"api_key": "…"`, `aws_secret_access_key = …`, `Authorization: Basic …`:
# keep the name, hide the value (group 2).
_KEYWORD = (
    r"(?:api[_-]?key|secret|password|passwd|pwd|token|credential|private[_-]?key"
    r"|access[_-]?key|auth)"
)
_ASSIGNMENT = re.compile(
    r"(?ix)("
    r"(?<![a-z0-9_.-])[\"']?(?:[a-z0-9_.-]*?[_.-])?"  # a name: GITHUB_, aws_secret_access_
    + _KEYWORD
    + r"(?:[_.-][a-z0-9_.-]*)?[\"']?"  # …_key, .value; not 'tokenizer'
    r"\s*(?::=|=>|[:=])\s*"
    r"(?:[\"']|(?:basic|bearer|token|digest)\s+)?"
    r")([^\s\"',;}{]{4,})"
)
_AUTHORIZATION = re.compile(
    r"(?i)\b((?:proxy-)?authorization\s*[:=]\s*[\"']?(?:basic|bearer|token|digest)?\s*)"
    r"([A-Za-z0-9._~+/=-]{6,})"
)
_SECRET_ENV = re.compile(r"(?i)(key|token|secret|password|passwd|credential)")
# Every rule above (and every detect-secrets rule used) needs either a run of 11+
# token characters, a URL with credentials, or one of these words; text with none of
# them — most prose — skips the ~35 rules in one scan (checked against the corpus in
# tests/test_attacks.py).
_MIGHT_HOLD_A_SECRET = re.compile(
    r"(?i)[A-Za-z0-9_+/=.-]{11,}|://|key|secret|pass|pw|token|auth|credential|private|eyJ|xox"
)


def secret_environment_values(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Values of environment variables whose names say they are secret."""
    return [v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]


def detect_secrets_rules() -> list[re.Pattern[str]]:
    """The regex rules of detect-secrets' plugins (its maintained list of formats)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    rules: list[re.Pattern[str]] = []
    plugins: dict[str, Any] = get_mapping_from_secret_type_to_class()
    for secret_type, plugin in plugins.items():
        if secret_type in _SKIPPED_PLUGINS or not issubclass(plugin, RegexBasedDetector):
            continue
        denylist: Iterable[Any] = getattr(plugin, "denylist", ())
        rules.extend(pattern for pattern in denylist if isinstance(pattern, re.Pattern))
    return rules


_RULES: list[re.Pattern[str]] | None = None


def _shared_rules() -> list[re.Pattern[str]]:
    global _RULES
    if _RULES is None:
        # Taskcast's whole-token rules first: some detect-secrets rules end lazily and
        # would leave the tail of a token (a JWT's signature) behind.
        _RULES = [*(re.compile(p) for p in DEFAULT_PATTERNS), *detect_secrets_rules()]
    return _RULES


def _mask_match(match: re.Match[str]) -> str:
    """Hide what the rule calls the secret: its last group when that group is the value
    (``://user:PASS@``), else the whole match (``ghp_…``, whose group is a prefix)."""
    whole = match.group(0)
    if match.lastindex:
        start, end = match.span(match.lastindex)
        if start > match.start() and end > start:
            offset = match.start()
            return whole[: start - offset] + MASK + whole[end - offset :]
    return MASK


class Redactor:
    def __init__(self, patterns: Iterable[str] = (), literals: Iterable[str] = ()) -> None:
        self.patterns = _shared_rules()
        self.user_patterns = [re.compile(p) for p in patterns]
        self.literals = sorted({s for s in literals if s}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for literal in self.literals:
            value = value.replace(literal, MASK)
        for pattern in self.user_patterns:
            value = pattern.sub(_mask_match, value)
        if _MIGHT_HOLD_A_SECRET.search(value) is None:
            return value
        for pattern in self.patterns:
            value = pattern.sub(_mask_match, value)
        value = _AUTHORIZATION.sub(_keep_name, value)
        return _ASSIGNMENT.sub(_keep_name, value)

    def payload(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.payload(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.payload(item) for item in value]
        return value


def _keep_name(match: re.Match[str]) -> str:
    if match.group(2) == MASK or match.group(2).startswith(MASK):
        return match.group(0)
    return match.group(1) + MASK
