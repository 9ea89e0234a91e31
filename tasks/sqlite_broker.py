"""kombu's SQLAlchemy transport with a settable polling interval.

kombu 5.7 hands every broker transport option to ``create_engine``, so ``polling_interval`` (read by
the virtual transport) makes the engine fail. This channel builds the engine itself; the studio maps
the ``sqla`` scheme to it, so ``sqla+sqlite:///...`` URLs keep working unchanged.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy import create_engine


class Channel(kombu_sqlalchemy.Channel):
    def _engine_from_config(self):
        url = self.connection.client.hostname
        # Wait out another process's write lock instead of failing at once.
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        return create_engine(url, connect_args=connect_args)


class Transport(kombu_sqlalchemy.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
