"""fedgate domain: settings, jobs, store, adapters, policies. Importable without a running worker."""

import functools

import redis.utils

__version__ = "0.1.0"

# redis-py 8 looks its own version up with importlib.metadata for every new connection and client object
# (kombu builds a client per ack): measured with py-spy, that was seconds of a worker's start-up with 1,000
# connections and half of its consumer thread's time. The answer never changes within a process.
redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)
