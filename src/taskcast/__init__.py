"""taskcast: every API action of your AI agents, delivered live and durably over websockets."""

__version__ = "0.1.0"
