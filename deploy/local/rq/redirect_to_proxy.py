"""Points RQ's test suite at slotproxy instead of a Redis on localhost:6379.

RQ's tests connect to localhost:6379 and pick the first empty database from 4 to 16, in the test
process and in the `rq`/`rqworker` processes they start. A cluster, and so slotproxy, has only
database 0. deploy/local/rq-compat.sh installs this module in the test venv with a `.pth` line,
so every Python process of that venv (the tests and the workers they spawn) runs it first.
Set SLOTPROXY_REDIRECT=host:port to turn it on; nothing else about RQ or its tests is changed.
"""
import os

target = os.environ.get("SLOTPROXY_REDIRECT")
if target:
    import redis.connection

    host, _, port = target.rpartition(":")
    original_init = redis.connection.Connection.__init__

    def connect_to_proxy(self, *args, **kwargs):
        if kwargs.get("host", "localhost") in ("localhost", "127.0.0.1") and int(
            kwargs.get("port", 6379)
        ) == 6379:
            kwargs["host"], kwargs["port"] = host, int(port)
            kwargs["db"] = 0
        original_init(self, *args, **kwargs)

    redis.connection.Connection.__init__ = connect_to_proxy
