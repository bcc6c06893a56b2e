"""The Redis queue: everything that knows Redis lives under this package.

``redis_queue`` is the queue object the rest of the library talks to; ``_scripts`` loads
the Lua scripts in ``lua/`` once and runs them; ``_keys`` is the key schema of one queue
(one hash slot per queue); ``_wire`` turns outcomes and configs into script arguments
and replies into values; ``_cluster`` routes a queue's commands to its slot's node;
``_urls`` builds clients from URLs; ``_waiter`` wakes producers waiting on results;
``_acl`` checks a user's permissions; ``_inspect`` reads queues for the dashboard and
metrics.
"""
