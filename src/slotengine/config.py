"""One typed settings object, read from SLOTENGINE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from slotengine.domain.errors import DomainError
from slotengine.domain.webhook_policy import default_retry_schedule, event_names, parse_url

DEV_JWT_SECRET = "slotengine-dev-secret-change-me-in-production"
MIN_SECRET_BYTES = 32


class ConfiguredEndpoint(BaseModel):
    """A webhook endpoint listed in SLOTENGINE_WEBHOOK_ENDPOINTS."""

    url: str
    secret: str = Field(pattern=r"^whsec_[A-Za-z0-9+/]{32,}={0,2}$")
    events: list[str] | None = None

    @model_validator(mode="after")
    def _url_and_events_are_valid(self) -> ConfiguredEndpoint:
        try:
            parse_url(self.url)
            event_names(self.events)
        except DomainError as refusal:  # the process stops at start, naming what is wrong
            raise ValueError(refusal.message) from None
        return self


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
    jwt_secret: str = Field(default=DEV_JWT_SECRET, description="HS256 key, 32+ bytes")
    allow_dev_secret: bool = Field(
        default=False,
        description="let serve/worker/scheduler run on the development secret (`dev` sets it)",
    )
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
    fast_path: bool = Field(
        default=True,
        description="answer repeated reserveSlot/confirmBooking/cancelBooking documents through their "
        "compiled plans, skipping graphql-core's generic execution (same answers, less CPU)",
    )
    max_body_bytes: int = Field(default=64 * 1024, gt=0, description="largest HTTP request body accepted")
    reserve_rate_per_minute: int = Field(
        default=120, ge=0, description="reserveSlot calls one holder may make per minute; 0 = no limit"
    )
    read_rate_per_minute: int = Field(
        default=600,
        ge=0,
        description="reads (slot, slots, booking, myBookings, queuePosition) one client may make per "
        "minute, a holder by token, an anonymous caller by address; 0 = no limit",
    )
    read_db_connections: int = Field(
        default=5,
        gt=0,
        description="reads running against the database at once per process; keep it below "
        "db_pool_size so that reserves always find a connection",
    )
    read_wait_seconds: float = Field(
        default=2.0, gt=0, description="how long a read waits for its turn before it is answered Busy"
    )
    live_bookings_per_holder: int = Field(
        default=20, ge=0, description="slots one holder may hold or wait for at once; 0 = no cap"
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to open WebSockets besides the API's own (JSON list)",
    )
    metrics_token: str | None = Field(
        default=None,
        description="bearer token that may read /metrics (besides an admin JWT); unset: admins only",
    )
    ws_init_timeout_seconds: float = Field(
        default=3.0, gt=0, description="a WebSocket that sends no connection_init in time is closed"
    )
    ws_max_subscriptions_per_connection: int = Field(
        default=20, gt=0, description="operations one WebSocket may run at once"
    )
    ws_max_sockets_per_holder: int = Field(
        default=64, gt=0, description="WebSockets one holder may keep open, per API process"
    )
    ws_max_subscriptions_per_holder: int = Field(
        default=500, gt=0, description="operations one holder may run over all its WebSockets, per process"
    )
    max_header_bytes: int = Field(
        default=16 * 1024, gt=0, description="largest HTTP request head (request line and headers)"
    )
    keep_alive_seconds: int = Field(
        default=5, gt=0, description="an idle keep-alive connection is closed after this long"
    )
    request_head_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a client must send a whole request head within this time"
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        """Each entry must be `*` or scheme://host[:port], which is what browsers send."""
        from strawberry.http.websocket_origin import normalize_allowed_origins

        normalize_allowed_origins(origins)  # raises ValueError naming the bad entry
        return origins

    resume_window_versions: int = Field(
        default=10_000,
        ge=0,
        description="how many of a slot's latest changes a subscription started with `after` may replay;"
        " a cursor further behind answers CursorExpired and the current state",
    )
    sweep_interval_seconds: float = Field(default=2.0, gt=0, description="backstop sweep period")
    scheduler_tick_seconds: float = Field(
        default=1.0,
        gt=0,
        description="the scheduler's heartbeat period, the longest it sleeps when no timer is due"
        " (timers armed wake it early, so this does not bound how late one fires)",
    )

    webhook_endpoints: list[ConfiguredEndpoint] = Field(
        default_factory=list,
        description="webhook endpoints kept from the settings, besides those admins register (JSON list of "
        '{"url": ..., "secret": "whsec_...", "events": ["booking.confirm", ...] or omitted for all})',
    )
    webhook_retry_schedule: list[float] = Field(
        default_factory=default_retry_schedule,
        min_length=1,
        description="seconds to wait after each failed delivery attempt (JSON list); given up after the last",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="one delivery attempt, connect to answer; slower counts as failed",
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often the scheduler has due webhook deliveries sent"
    )
    webhook_allow_loopback: bool = Field(
        default=False,
        description="let webhooks reach loopback addresses (tests, a receiver on the same host)",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="let webhooks reach private, link-local and other non-global addresses "
        "(an internal network)",
    )

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _delays_are_positive(cls, delays: list[float]) -> list[float]:
        if any(delay <= 0 for delay in delays):
            raise ValueError("every delay of SLOTENGINE_WEBHOOK_RETRY_SCHEDULE must be above 0")
        return delays

    @model_validator(mode="after")
    def _readers_leave_connections_for_reserves(self) -> Settings:
        if self.read_db_connections >= self.db_pool_size:
            raise ValueError(
                "SLOTENGINE_READ_DB_CONNECTIONS must be below SLOTENGINE_DB_POOL_SIZE: readers would "
                "otherwise be able to take every connection a reserve needs"
            )
        return self


def unsafe_secret_reason(settings: Settings) -> str | None:
    """Why the JWT secret must not sign tokens in this process, or None when it may."""
    if settings.jwt_secret == DEV_JWT_SECRET and not settings.allow_dev_secret:
        # Anyone can read the development secret here, and so mint an admin token.
        return (
            "SLOTENGINE_JWT_SECRET is unset (or the public development secret): set it to a random "
            "string of 32+ bytes, e.g. $(openssl rand -hex 32); only 'slotengine dev' runs without one"
        )
    if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        return f"SLOTENGINE_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: use a longer random string"
    return None


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
