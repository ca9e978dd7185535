"""The client SDK: publish with an outbox and acks, subscribe with resume."""

from taskcast.client.outbox import Outbox
from taskcast.client.service import CommunicationService
from taskcast.client.subscriber import subscribe

__all__ = ["CommunicationService", "Outbox", "subscribe"]
