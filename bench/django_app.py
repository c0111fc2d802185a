"""The broker module of the linking benchmark's ``django`` mode: django-dramatiq as the peer reference.

django-dramatiq's ``AdminMiddleware`` (one ``django_dramatiq_task`` row per
message, written at send, start and end) and ``DbConnectionsMiddleware`` on a
``RedisBroker`` with Dramatiq's default middleware, configured the way
django-dramatiq builds its broker (the ``DRAMATIQ_BROKER`` setting), with
Dramatiq's own logging.  The rows go to DATABASE_URL's PostgreSQL.  Not a
dependency of the product: ``pip install "django-dramatiq==0.15.*"`` first.
"""

import os
from urllib.parse import unquote, urlparse

import django
import dramatiq
from django.conf import settings
from dramatiq.middleware import default_middleware

_url = urlparse(os.environ["DATABASE_URL"])
settings.configure(
    INSTALLED_APPS=["django_dramatiq"],
    USE_TZ=True,
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": _url.path.lstrip("/"), "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""), "HOST": _url.hostname, "PORT": _url.port or 5432,
    }},
    DRAMATIQ_BROKER={
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {"url": os.environ["REDIS_URL"]},
        "MIDDLEWARE": [*(f"{m.__module__}.{m.__name__}" for m in default_middleware),
                       "django_dramatiq.middleware.AdminMiddleware",
                       "django_dramatiq.middleware.DbConnectionsMiddleware"],
    },
)
django.setup()  # django-dramatiq builds the broker and sets it as Dramatiq's
broker = dramatiq.get_broker()

from bench.bench_actors import io_20ms, noop  # noqa: E402, F401  (declared on the broker set above)
