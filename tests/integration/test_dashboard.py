"""The web dashboard as a WSGI app: pages, escaping, mounting, bounded pages, actions
behind a secret with CSRF, and ``python -m jobs dashboard``.

The same pages in a real browser: test_dashboard_browser.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from typing import TYPE_CHECKING

import pytest

import jobs
from jobs.dashboard import Dashboard
from jobs.dashboard._data import FILTER_WINDOW, PAGE_SIZE
from jobs.queue._keys import QueueKeys
from tests.helpers import wait_until
from tests.integration._clients import make_client, unique_name
from tests.integration._dashboard import EVIL, call, fill_queue, login, served

if TYPE_CHECKING:
    import redis

    from tests.integration._topologies import ClusterTopology

SECRET = "correct horse"


@pytest.fixture
def app(redis_client: redis.Redis) -> Dashboard:
    return Dashboard(redis_client, secret=SECRET)


def test_every_page_renders_the_jobs_of_every_queue(redis_url: str, app: Dashboard) -> None:
    filled = fill_queue(redis_url, unique_name("shop"))
    other = fill_queue(redis_url, unique_name("mail"))
    overview = call(app, "/")
    assert overview.status == 200
    assert overview.headers["Content-Type"] == "text/html; charset=utf-8"
    for name in (filled.queue, other.queue):
        assert f'id="queue-{name}"' in overview.text
    assert "<svg" in overview.text and "Last 60 minutes: 7 enqueued, 3 completed, 2 failed" in (
        overview.text
    )
    failed = call(app, "/jobs", {"queue": filled.queue, "status": "failed"})
    assert all(job_id in failed.text for job_id in filled.failed)
    job = call(app, "/job", {"queue": filled.queue, "id": filled.failed[0]})
    assert job.status == 200
    assert "Traceback (most recent call last)" in job.text and "Boom: bad input" in job.text
    for path in ("/workers", "/crons"):
        assert call(app, path).status == 200
    assert call(app, "/job", {"queue": filled.queue, "id": "nope"}).status == 404
    assert call(app, "/jobs", {"queue": "bad name{"}).status == 404
    assert call(app, "/nowhere").status == 404


def test_payloads_and_errors_render_as_text_never_as_markup(redis_url: str, app: Dashboard) -> None:
    filled = fill_queue(redis_url, unique_name())
    pages = [
        call(app, "/job", {"queue": filled.queue, "id": filled.failed[0]}),
        call(app, "/jobs", {"queue": filled.queue, "status": "failed"}),
        call(app, "/jobs", {"queue": filled.queue, "status": "failed", "type": EVIL}),
    ]
    for page in pages:
        assert page.status == 200
        assert "<script>" not in page.text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page.text
    # Only the dashboard's own files, nothing inline, nothing from elsewhere.
    assert "script-src 'self'" in pages[0].headers["Content-Security-Policy"]
    assert re.findall(r"<script[^>]*>", pages[0].text) == ['<script src="/static/app.js" defer>']
    assert "http://" not in pages[0].text and "https://" not in pages[0].text


def test_a_running_job_shows_its_progress_as_a_bar_and_escaped_text(
    redis_url: str, app: Dashboard
) -> None:
    release = threading.Event()

    def export(ctx: jobs.JobContext, payload: object) -> str:
        ctx.progress(0.42, f"row 420 of 1000 {EVIL}")
        release.wait(20)
        return "done"

    registry = jobs.Registry()
    registry.register_func("export", export)
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("export")
        queue = client.queue.name
        # Stored by the pool's next heartbeat.
        wait_until(lambda: client.get(job_id).progress is not None, 10)
        running = call(app, "/job", {"queue": queue, "id": job_id})
        release.set()
        client.wait(job_id, timeout=10)
        done = call(app, "/job", {"queue": queue, "id": job_id})
    assert running.status == 200
    assert '<progress max="1" value="0.4200" aria-label="progress 42%">' in running.text
    assert "row 420 of 1000 &lt;script&gt;window.pwned=1&lt;/script&gt;" in running.text
    assert "<script>" not in running.text
    # A finished job has no progress to show.
    assert "<progress" not in done.text and "<h2>Progress</h2>" not in done.text


def test_mounted_under_a_prefix_every_link_and_form_stays_under_it(
    redis_url: str, app: Dashboard
) -> None:
    filled = fill_queue(redis_url, unique_name())
    cookie, _ = login(app, SECRET, script_name="/ops/jobs")
    page = call(
        app,
        "/jobs",
        {"queue": filled.queue, "status": "failed"},
        cookie=cookie,
        script_name="/ops/jobs",
    )
    urls = re.findall(r'(?:href|src|action)="([^"]+)"', page.text)
    assert urls
    assert all(url.startswith("/ops/jobs/") for url in urls), urls
    static = call(app, "/static/style.css", script_name="/ops/jobs")
    assert static.status == 200 and static.headers["Content-Type"].startswith("text/css")
    assert call(app, "/static/../_app.py").status == 404


def test_lists_are_paged_and_filters_read_a_bounded_window(
    redis_url: str, redis_client: redis.Redis
) -> None:
    name = unique_name()
    with make_client(redis_url, name=name) as client:
        client.enqueue_many("a", range(PAGE_SIZE + 10))
        client.enqueue_many("b", range(FILTER_WINDOW + 100))
        client.enqueue_many("a", range(5))
    store = Dashboard(redis_client).store
    first = store.page(name, jobs.JobStatus.PENDING)
    assert len(first.jobs) == PAGE_SIZE and first.next_start == PAGE_SIZE
    second = store.page(name, jobs.JobStatus.PENDING, PAGE_SIZE)
    assert [j.payload for j in second.jobs][:10] == list(range(PAGE_SIZE, PAGE_SIZE + 10))
    # Type "a": 10 on the first window, then the rest of the window is "b": it stops
    # there and says where to go on, instead of reading the whole index.
    page = store.page(name, jobs.JobStatus.PENDING, PAGE_SIZE, job_type="a")
    assert len(page.jobs) == 10
    assert page.scanned == FILTER_WINDOW and page.next_start == PAGE_SIZE + FILTER_WINDOW
    rest = store.page(name, jobs.JobStatus.PENDING, page.next_start or 0, job_type="a")
    assert [j.payload for j in rest.jobs] == list(range(5)) and rest.next_start is None


def test_actions_are_off_without_a_secret(redis_url: str, redis_client: redis.Redis) -> None:
    filled = fill_queue(redis_url, unique_name())
    read_only = Dashboard(redis_client)
    page = call(read_only, "/job", {"queue": filled.queue, "id": filled.failed[0]})
    assert "read-only" in page.text and 'name="csrf"' not in page.text
    form = {"action": "retry", "queue": filled.queue, "id": filled.failed[0], "csrf": "x"}
    assert call(read_only, "/action", method="POST", form=form).status == 403
    assert call(read_only, "/login").status == 403
    with make_client(redis_url, name=filled.queue) as client:
        assert client.get(filled.failed[0]).status is jobs.JobStatus.FAILED


def test_actions_need_the_login_and_the_form_token(redis_url: str, app: Dashboard) -> None:
    filled = fill_queue(redis_url, unique_name())
    form = {"action": "retry", "queue": filled.queue, "id": filled.failed[0]}
    assert call(app, "/action", method="POST", form=form).status == 403  # not logged in
    wrong = call(app, "/login", method="POST", form={"secret": "guess"})
    assert wrong.status == 401 and not wrong.cookies
    cookie, csrf = login(app, SECRET)
    (set_cookie,) = call(app, "/login", method="POST", form={"secret": SECRET}).cookies
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    # Logged in, but the form does not carry the session's token (a cross-site post).
    assert call(app, "/action", method="POST", form=form, cookie=cookie).status == 403
    bad_token = {**form, "csrf": "0" * 64}
    assert call(app, "/action", method="POST", form=bad_token, cookie=cookie).status == 403
    assert call(app, "/action", {"csrf": csrf, **form}, cookie=cookie).status == 405  # GET
    forged = cookie.rsplit(".", 1)[0] + "." + "0" * 64
    assert (
        call(app, "/action", method="POST", form={**form, "csrf": csrf}, cookie=forged).status
        == 403
    )
    with make_client(redis_url, name=filled.queue) as client:
        assert client.get(filled.failed[0]).status is jobs.JobStatus.FAILED


def test_retry_cancel_delete_and_bulk_retry(redis_url: str, app: Dashboard) -> None:
    filled = fill_queue(redis_url, unique_name())
    cookie, csrf = login(app, SECRET)

    def act(action: str, **fields: str) -> str:
        back = f"/jobs?queue={filled.queue}&status=failed"
        form = {"action": action, "queue": filled.queue, "csrf": csrf, "back": back, **fields}
        reply = call(app, "/action", method="POST", form=form, cookie=cookie)
        assert reply.status == 303, reply
        location = reply.headers["Location"]
        assert location.startswith(f"/jobs?queue={filled.queue}&status=failed&notice=")
        return location

    with make_client(redis_url, name=filled.queue) as client:
        assert "pending+again" in act("retry", id=filled.failed[0])
        assert client.get(filled.failed[0]).status is jobs.JobStatus.PENDING
        act("cancel", id=filled.pending[0])
        assert client.get(filled.pending[0]).status is jobs.JobStatus.CANCELLED
        assert "not+finished" in act("delete", id=filled.pending[1])  # live: refused
        act("delete", id=filled.completed[0])
        with pytest.raises(jobs.JobNotFound):
            client.get(filled.completed[0])
        assert (
            filled.completed[0]
            not in call(app, "/jobs", {"queue": filled.queue, "status": "completed"}).text
        )
        assert "1+failed+job" in act("retry_failed", type="charge")
        assert client.get(filled.failed[1]).status is jobs.JobStatus.PENDING
        assert client.stats().failed_jobs == 0  # a retried job leaves the failed count


def test_the_dashboard_command_serves_until_sigterm(redis_url: str) -> None:
    filled = fill_queue(redis_url, unique_name())
    env = {**os.environ, "REDIS_URL": redis_url, "JOBS_DASHBOARD_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "dashboard", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"jobs dashboard: (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, line
        with urllib.request.urlopen(match.group(1), timeout=10) as reply:
            text = reply.read().decode()
        assert filled.queue in text and "Log in to act" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_served_over_http(redis_url: str, app: Dashboard) -> None:
    filled = fill_queue(redis_url, unique_name())
    with served(app) as base:
        url = f"{base}/job?queue={filled.queue}&id={filled.failed[0]}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
            assert reply.headers["X-Frame-Options"] == "DENY"
            assert "Boom: bad input" in reply.read().decode()


def test_on_a_cluster_queues_on_every_master_are_found(cluster: ClusterTopology) -> None:
    def master(name: str) -> int:
        return cluster.master_of(QueueKeys.for_queue("jobs", name).stats).port

    names = [unique_name("c")]
    while len({master(n) for n in names}) < 2:
        names.append(unique_name("c"))
    client = cluster.client()
    try:
        with make_client(cluster.url, name=names[0]) as producer:
            producer.enqueue("x", 1)
        for name in names[1:]:
            with make_client(cluster.url, name=name) as producer:
                producer.enqueue("y", 2)
        app = Dashboard(client)
        assert set(names) <= set(app.store.queue_names())
        overview = call(app, "/")
        assert overview.status == 200
        assert all(f'id="queue-{name}"' in overview.text for name in names)
        assert "Last 60 minutes: 1 enqueued" in overview.text
        page = call(app, "/jobs", {"queue": names[0], "status": "pending"})
        assert page.status == 200 and "<td>x</td>" in page.text
    finally:
        client.close()


def _calls(redis_client: redis.Redis) -> dict[str, int]:
    stats = redis_client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_a_page_costs_redis_a_bounded_number_of_commands(
    redis_url: str, redis_client: redis.Redis
) -> None:
    name = unique_name()
    with make_client(redis_url, name=name) as client:
        for _ in range(5):
            client.enqueue_many("bulk", range(1000))
    app = Dashboard(redis_client)
    for query, most_records in (
        ({"status": "pending"}, PAGE_SIZE + 1),
        ({"status": "pending", "start": "4000"}, PAGE_SIZE + 1),
        ({"status": "pending", "type": "absent"}, FILTER_WINDOW),
    ):
        redis_client.config_resetstat()
        assert call(app, "/jobs", {"queue": name, **query}).status == 200
        calls = _calls(redis_client)
        assert calls.get("hgetall", 0) <= most_records, (query, calls)
        assert calls.get("zrange", 0) <= FILTER_WINDOW // 200 + 1, (query, calls)
        # No command walks the whole index or the keyspace.
        assert not {"keys", "scan", "zrangebyscore", "smembers", "hscan", "zscan"} & calls.keys()
