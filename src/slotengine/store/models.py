"""Tortoise models mapping the tables that migrations/*.sql create."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Slot(Model):
    id = fields.UUIDField(primary_key=True)
    resource = fields.TextField()
    starts_at = fields.DatetimeField()
    ends_at = fields.DatetimeField()
    capacity = fields.IntField()
    hold_seconds = fields.IntField()
    closed = fields.BooleanField(default=False)
    max_extensions = fields.IntField(default=1)
    max_hold_seconds = fields.IntField(null=True)  # None: 3 x hold_seconds (policy.hold_cap_seconds)
    fill_policy = fields.TextField(default="STRICT_FIFO")  # domain/fill_policy.py FillPolicy
    max_pass_overs = fields.IntField(default=3)
    fence = fields.BigIntField(default=0)
    version = fields.BigIntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "slots"


class Transition(Model):
    id = fields.BigIntField(primary_key=True)
    booking_id = fields.UUIDField()
    from_state = fields.CharField(max_length=16, null=True)
    to_state = fields.CharField(max_length=16)
    event = fields.CharField(max_length=32)
    actor = fields.TextField()
    reason = fields.TextField(null=True)
    fence = fields.BigIntField(null=True)
    at = fields.DatetimeField()

    class Meta:
        table = "transitions"
        ordering = ("id",)
