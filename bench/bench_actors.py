"""The benchmark's two actors, a no-op and a 20 ms sleep, declared on the broker each app sets before importing this."""

import time

import dramatiq


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop():
    pass


@dramatiq.actor(queue_name="bench", max_retries=0)
def io_20ms():
    time.sleep(0.02)
