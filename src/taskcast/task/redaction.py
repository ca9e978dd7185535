"""Secrets that pass through a task (keys in command output, tokens in files) are
replaced by ``[REDACTED]`` in every event the task emits. Users extend the list."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

DEFAULT_PATTERNS = (
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*",
)
# `password=…`, `api_key: …`: keep the name, hide the value.
_ASSIGNMENT = re.compile(
    r"(?i)\b((?:[a-z0-9_]*?(?:api[_-]?key|secret|password|passwd|token))\s*[=:]\s*[\"']?)([^\s\"']{6,})"
)
_SECRET_ENV = re.compile(r"(?i)(key|token|secret|password|passwd|credential)")


def secret_environment_values(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Values of environment variables whose names say they are secret."""
    return [v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]


class Redactor:
    def __init__(self, patterns: Iterable[str] = (), literals: Iterable[str] = ()) -> None:
        self.patterns = [re.compile(p) for p in (*DEFAULT_PATTERNS, *patterns)]
        self.literals = sorted({s for s in literals if s}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for literal in self.literals:
            value = value.replace(literal, MASK)
        for pattern in self.patterns:
            value = pattern.sub(MASK, value)
        return _ASSIGNMENT.sub(lambda m: m.group(1) + MASK, value)

    def payload(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.payload(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.payload(item) for item in value]
        return value
