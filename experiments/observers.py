"""MongoDB observer for Omniboard: Sacred's QueuedMongoObserver (the plain MongoObserver can stop
silently on long runs, leaving Omniboard showing PROBABLY_DEAD: IDSIA/sacred#434)."""
from __future__ import annotations

from urllib.parse import urlparse

DEFAULT_DB = "asae"


def parse_mongo_url(url: str) -> tuple[str, str]:
    """'mongodb://host:port/db' or Sacred's '[host:port:]db' -> (client url, db name)."""
    if url.startswith(("mongodb://", "mongodb+srv://")):
        db = urlparse(url).path.lstrip("/") or DEFAULT_DB
        return url, db
    parts = url.split(":")
    if len(parts) == 1:
        return "mongodb://localhost:27017", parts[0] or DEFAULT_DB
    if len(parts) == 3:
        return f"mongodb://{parts[0]}:{parts[1]}", parts[2]
    from envs.config import ConfigError

    raise ConfigError(f"MongoDB URL {url!r} is not valid; use mongodb://host:port/db or host:port:db")


def mongo_observer(url: str):
    from sacred.observers import QueuedMongoObserver

    client_url, db = parse_mongo_url(url)
    return QueuedMongoObserver(url=client_url, db_name=db)
