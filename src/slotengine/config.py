"""One typed settings object, read from SLOTENGINE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "slotengine-dev-secret-change-me-in-production"


class Settings(BaseSettings):
    """Everything the engine can be told from outside; defaults suit `make run`."""

    model_config = SettingsConfigDict(env_prefix="SLOTENGINE_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset runs an embedded server in data_dir"
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL; unset runs an embedded server in data_dir"
    )
    redis_cluster: bool = Field(
        default=False,
        description="SLOTENGINE_REDIS_URL names a node of a Redis Cluster: every role uses a cluster client",
    )
    redis_prefix: str = Field(default="se:", description="prefix of every Redis key and channel")
    data_dir: Path = Field(default=Path(".slotengine"), description="embedded servers' files")
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str = Field(default=DEV_JWT_SECRET, min_length=32, description="HS256 key, 32+ bytes")
    token_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    db_pool_size: int = Field(default=20, gt=0)
    redis_pool_size: int = Field(default=100, gt=0, description="Redis connections per process")
    log_level: str = "info"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object a line with slot and booking ids; text"
    )
    introspection: bool = Field(
        default=False,
        description="answer schema introspection (dev turns it on; clients can use schema.graphql)",
    )
    max_body_bytes: int = Field(default=64 * 1024, gt=0, description="largest HTTP request body accepted")
    reserve_rate_per_minute: int = Field(
        default=120, ge=0, description="reserveSlot calls one holder may make per minute; 0 = no limit"
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to open WebSockets besides the API's own (JSON list)",
    )
    sweep_interval_seconds: float = Field(default=2.0, gt=0, description="backstop sweep period")
    scheduler_tick_seconds: float = Field(
        default=1.0,
        gt=0,
        description="the scheduler's heartbeat period, the longest it sleeps when no timer is due"
        " (timers armed wake it early, so this does not bound how late one fires)",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


class MissingSetting(RuntimeError):
    """A setting the process needs is unset; the message names its environment variable."""


def variable_of(field: str) -> str:
    """The environment variable that sets the Settings field `field`."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def required(settings: Settings, field: Literal["database_url", "redis_url"]) -> str:
    """The server URL in `field`, or MissingSetting naming its variable when it is unset."""
    value: str | None = getattr(settings, field)
    if not value:
        raise MissingSetting(f"{variable_of(field)} is not set")
    return value
