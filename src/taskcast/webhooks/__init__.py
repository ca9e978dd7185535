"""Webhooks: subscribers with a durable cursor, delivered per Standard Webhooks.

``policy.py`` decides (pure): which targets are allowed, when to retry, when a webhook
has failed. ``worker.py`` delivers (aiohttp), one task per webhook so a slow or dead
endpoint delays nobody else. docs/webhooks.md.
"""
