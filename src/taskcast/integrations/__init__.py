"""One-line add-ons that make other agent frameworks publish taskcast's events.

Each lives behind an optional extra so ``pip install taskcast`` stays light:
``taskcast[langchain]`` (``integrations.langchain``), ``taskcast[openai-agents]``
(``integrations.openai_agents``), ``taskcast[otel]`` (``integrations.otel``).
"""

from __future__ import annotations


def missing_extra(extra: str, package: str) -> ImportError:
    """The error for an integration imported without its extra: says what to install."""
    return ImportError(
        f"taskcast's {extra} integration needs {package}: pip install 'taskcast[{extra}]'"
    )
