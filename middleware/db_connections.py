"""DatabaseConnections: give each worker thread's connection back after every message."""

from __future__ import annotations

from dramatiq.middleware import Middleware
from peewee import DatabaseProxy

from models.database import database as default_database


class DatabaseConnections(Middleware):
    """Returns the worker thread's database connection to the pool after each message.

    Peewee keeps one connection per thread; a worker thread that held on to
    its connection between messages would pin it for the life of the
    process, and a connection broken by a database restart would be reused.

    Parameters:
      database(peewee.Database): The database to release.  Defaults to
        ``models.database``.
    """

    def __init__(self, database=None) -> None:
        self.database = database if database is not None else default_database

    def _release(self) -> None:
        if isinstance(self.database, DatabaseProxy) and self.database.obj is None:
            return  # nothing bound (JobLinking refuses to start a worker without a database)
        if not self.database.is_closed():
            if self.database.in_transaction():
                self.database.rollback()  # an actor that left a transaction open
            self.database.close()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self._release()

    def after_skip_message(self, broker, message):
        self._release()

    def before_worker_thread_shutdown(self, broker, thread):
        self._release()
