"""Cron: when jobs fire, what fires, and the thread that fires each time exactly once.

``schedules`` computes fire times (cron arithmetic in ``_cron``), ``cron_job`` describes
what a fire enqueues, and ``scheduler`` is the background thread that claims each fire
time in Redis before enqueueing it. The scheduler is made of ``_clock`` (Redis time
carried by the monotonic clock), ``_planner`` (next fire times and the misfire policy)
and ``_firing`` (its registrations: planning from Redis, claiming, announcing).
"""
