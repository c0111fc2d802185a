"""The base model every table shares, and the one clock every timestamp uses."""

from __future__ import annotations

import datetime as dt
import uuid

import peewee

from .database import database


def utcnow() -> dt.datetime:
    """Now, in UTC, without tzinfo: every stored timestamp is naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class BaseModel(peewee.Model):
    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)

    class Meta:
        database = database
        legacy_table_names = False


class TimestampedModel(BaseModel):
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    def save(self, *args, **kwargs):
        self.updated_at = utcnow()
        return super().save(*args, **kwargs)
