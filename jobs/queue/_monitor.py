"""What `RedisQueue` reports about itself: stats, history, live pools, server facts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster
import redis.sentinel

from jobs import _codec
from jobs.errors import (
    ConfigError,
)
from jobs.job import MinuteCounts, QueueHistory, QueueStats, WorkerInfo

if TYPE_CHECKING:
    import logging
from jobs.queue._base import _HISTORY_FIELDS, HISTORY_MINUTES, RECORD_BYTES, QueueBase, _count, _row


class Monitor(QueueBase):
    """Counters, history, workers, and the server facts the library checks."""

    def stats(self) -> QueueStats:
        """The queue's counts, in one O(1) call."""
        k = self.keys
        with self._unavailable_as_error():
            pending, scheduled, processing, flat, waiting, held = self._scripts.stats(
                self.client, (k.pending, k.scheduled, k.processing, k.stats, k.waiting), ()
            )
        counters = _codec.pairs(flat)

        def count(name: str) -> int:
            try:
                return int(counters.get(name, 0))
            except ValueError:  # a counter damaged by hand: the scripts restart it too
                return 0

        try:
            last_processed = _codec.from_ms(counters.get("last_processed"))
        except (ValueError, OverflowError, OSError):
            last_processed = None
        return QueueStats(
            total_jobs=count("total"),
            pending_jobs=int(pending),
            scheduled_jobs=int(scheduled),
            processing_jobs=int(processing),
            completed_jobs=count("completed"),
            failed_jobs=count("failed"),
            cancelled_jobs=count("cancelled"),
            last_processed=last_processed,
            retried_attempts=count("retried"),
            lost_leases=count("lost_leases"),
            rejected_writes=count("rejected"),
            damaged_records=count("damaged"),
            waiting_jobs=int(waiting),
            throttled_jobs=int(held),
        )

    def history(self, minutes: int = HISTORY_MINUTES) -> QueueHistory:
        """Per-minute counts over the last ``minutes`` minutes, the current one last.

        One round trip of ``minutes`` HMGETs, whatever the number of jobs.
        """
        if not 1 <= minutes <= HISTORY_MINUTES:
            raise ConfigError(f"minutes must be in 1..{HISTORY_MINUTES}, got {minutes!r}")
        with self._unavailable_as_error():
            current = self.server_time_ms() // 60_000
            first = current - minutes + 1
            pipe = self.client.pipeline(transaction=False)
            for minute in range(first, current + 1):
                pipe.hmget(self.keys.history(minute), _HISTORY_FIELDS)
            # A minute's key damaged by hand reads as zeros, not as a failed call.
            rows = pipe.execute(raise_on_error=False)
        return QueueHistory(
            minutes=tuple(
                MinuteCounts(
                    minute=cast("Any", _codec.from_ms(minute * 60_000)),
                    **{f: _count(v) for f, v in zip(_HISTORY_FIELDS, _row(row), strict=True)},
                )
                for minute, row in zip(range(first, current + 1), rows, strict=True)
            )
        )

    def workers(self) -> list[WorkerInfo]:
        """The live worker pools of this queue (records of dead pools are dropped)."""
        with self._unavailable_as_error():
            reply = self._scripts.workers(
                self.client, (self.keys.workers,), (self.keys.worker_prefix,)
            )
        found = []
        for pool_id, flat in reply[1:]:
            record = _codec.pairs(flat)
            try:
                info = json.loads(record["info"])
                found.append(
                    WorkerInfo(
                        id=_codec.text(pool_id),
                        hostname=str(info["hostname"]),
                        pid=int(info["pid"]),
                        num_workers=int(info["num_workers"]),
                        in_flight=int(info["in_flight"]),
                        started_at=cast("Any", _codec.from_ms(record["started_at"])),
                        last_seen=cast("Any", _codec.from_ms(record["last_seen"])),
                    )
                )
            except (KeyError, ValueError, TypeError):
                continue  # a record half-written by a foreign tool: not a pool of ours
        return sorted(found, key=lambda w: w.started_at)

    def memory_policy(self) -> tuple[int, str]:
        """The server's ``maxmemory`` (bytes, 0 = no limit) and ``maxmemory-policy``.

        Raises:
            redis.RedisError: CONFIG GET refused (an ACL without ``+config|get``, or a
                managed Redis that renamed CONFIG).
        """
        found = self.config_get("maxmemory*")
        return int(found.get("maxmemory", "0")), found.get("maxmemory-policy", "noeviction")

    def warn_if_evicting(self, logger: logging.Logger) -> None:
        """Log when the server may evict this queue's keys to stay under ``maxmemory``.

        Only ``noeviction`` (or no ``maxmemory`` at all) keeps every key: an ``allkeys-*``
        policy may drop pending and running jobs, and the queue's indexes (WARNING). A
        ``volatile-*`` policy evicts only keys that have a TTL: finished job records before
        their ``completed_ttl`` / ``failed_ttl``, cron claims and pool records (INFO). A
        server that refuses CONFIG GET is not checked (DEBUG).
        """
        extra = {"queue": self.name}
        try:
            maxmemory, policy = self.memory_policy()
        except (redis.RedisError, ValueError):
            logger.debug("cannot read maxmemory-policy at %s", self.address, exc_info=True)
            return
        if maxmemory:
            # Finished records at their count bounds, at about RECORD_BYTES each: what the
            # retention settings alone may hold at a sustained rate.
            kept = self.config.max_completed_jobs + 2 * self.config.max_failed_jobs
            if not self.config.max_completed_jobs or kept * RECORD_BYTES > maxmemory:
                logger.warning(
                    "Redis at %s has maxmemory %d MB, and this queue's retention may keep "
                    "%s finished records (about %d bytes each) under a sustained load: lower "
                    "max_completed_jobs / completed_ttl, or raise maxmemory",
                    self.address,
                    maxmemory >> 20,
                    f"{kept:,}" if self.config.max_completed_jobs else "unbounded",
                    RECORD_BYTES,
                    extra=extra,
                )
        if maxmemory == 0 or policy == "noeviction":
            return
        if policy.startswith("volatile-"):
            logger.info(
                "Redis at %s evicts keys with a TTL when full (maxmemory-policy %s): finished "
                "job records may vanish before their completed_ttl/failed_ttl",
                self.address,
                policy,
                extra=extra,
            )
        else:
            logger.warning(
                "Redis at %s may evict any key when full (maxmemory-policy %s): pending and "
                "running jobs can be lost; set maxmemory-policy noeviction",
                self.address,
                policy,
                extra=extra,
            )

    def server_time_ms(self) -> int:
        """The clock of the Redis server holding this queue (TIME), in ms since the epoch."""
        if isinstance(self.client, redis.cluster.RedisCluster):
            # The node owning the queue's slot: the clock its scripts read.
            cluster: Any = self.client  # untyped in some redis-py releases, typed in others
            node = cluster.get_node_from_key(self.keys.crons)
            seconds, micros = cluster.time(target_nodes=node)
        else:
            seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000
