"""The hub: validate, store, number, fan out, replay; websocket and HTTP on one port."""

from taskcast.hub.config import HubConfig
from taskcast.hub.core import Hub
from taskcast.hub.server import build_app, serve

__all__ = ["Hub", "HubConfig", "build_app", "serve"]
