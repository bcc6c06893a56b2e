"""`jobs.contrib.flask`: settings from app.config, handlers in the app context, commands,
enqueue after commit, and the example application of ``examples/flask`` served by a real
WSGI server (waitress, 8 threads) with a real ``flask jobs worker`` process.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flask
import pytest

import jobs
from jobs import testing
from jobs.contrib.flask import Jobs
from tests.helpers import free_port, wait_until
from tests.integration._clients import unique_name

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask"


def make_app(redis_url: str, **config: Any) -> flask.Flask:
    app = flask.Flask(unique_name("app"))
    app.config.update(JOBS_REDIS_URL=redis_url, JOBS_QUEUE=unique_name(), **config)
    return app


@pytest.fixture
def apps() -> Iterator[list[flask.Flask]]:
    """Apps whose queues are closed after the test."""
    made: list[flask.Flask] = []
    yield made
    for app in made:
        app.extensions["jobs"].queue.close()


def test_settings_come_from_app_config_and_each_app_has_one_client(
    redis_url: str, apps: list[flask.Flask]
) -> None:
    background = Jobs()
    first = make_app(
        redis_url,
        JOBS_PREFIX="web",
        JOBS_QUEUE_OPTIONS={"max_payload_bytes": 100},
        JOBS_WORKER_POOL_CONFIG={"num_workers": 3},
    )
    second = make_app(redis_url)
    apps += [first, second]
    for app in apps:
        background.init_app(app)
    with first.app_context():
        client = background.client
        assert client.queue.name == first.config["JOBS_QUEUE"]
        assert client.queue.config.prefix == "web"
        assert client.queue.config.max_payload_bytes == 100
        assert client.config.worker_pool_config.num_workers == 3
        with pytest.raises(jobs.PayloadError):
            background.enqueue("t", "x" * 200)
        # Every request thread shares the app's one client.
        seen: list[jobs.Client] = []

        def in_a_request() -> None:
            with first.test_request_context():
                seen.append(background.client)

        threads = [threading.Thread(target=in_a_request) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [client] * 4
    assert background.client_for(second) is not client
    with pytest.raises(RuntimeError, match="no application context"):
        background.client  # noqa: B018
    with pytest.raises(jobs.ConfigError, match="JOBS_WORKER_POOL_CONFIG"):
        Jobs(make_app(redis_url, JOBS_WORKER_POOL_CONFIG=3))


def test_handlers_run_in_their_apps_context(redis_url: str, apps: list[flask.Flask]) -> None:
    background = Jobs()
    seen: list[str] = []

    @background.registry.add_middleware
    def inner(ctx: jobs.JobContext, call_next: Any) -> Any:
        seen.append(f"middleware in {flask.current_app.name}")  # inside the app context
        return call_next()

    @background.job("whoami")
    def whoami(ctx: jobs.JobContext, payload: None) -> str:
        flask.g.touched = True
        return str(flask.current_app.config["NAME"])

    first = make_app(redis_url, NAME="first")
    second = make_app(redis_url, NAME="second")
    apps += [first, second]
    background.init_app(first)
    background.init_app(second)
    for app in apps:
        client = background.client_for(app)
        job_id = client.enqueue("whoami")
        (ran,) = testing.drain(client)
        assert ran.id == job_id
        assert ran.result == app.config["NAME"]
    assert seen == [f"middleware in {first.name}", f"middleware in {second.name}"]

    # With a worker pool: its threads have no app context of their own.
    worker = background.worker_client(second, num_workers=2, poll_interval=0.1)
    job_id = worker.enqueue("whoami")
    with worker:
        assert worker.result(job_id, timeout=10) == "second"

    plain = Jobs(make_app(redis_url), app_context=False)
    apps.append(next(iter(plain._all_apps)))
    plain.registry.register_func("ctx", lambda ctx, payload: flask.has_app_context())
    client = plain.client_for(apps[-1])
    client.enqueue("ctx")
    assert [job.result for job in testing.drain(client)] == [False]


def test_flask_jobs_stats_and_help(redis_url: str, apps: list[flask.Flask]) -> None:
    app = make_app(redis_url)
    apps.append(app)
    background = Jobs(app)
    background.client_for(app).enqueue("t", 1)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["jobs", "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pending_jobs"] == 1
    result = runner.invoke(args=["jobs", "stats"])
    assert "total_jobs: 1" in result.output.splitlines()
    result = runner.invoke(args=["jobs", "--help"])
    assert {"worker", "scheduler", "stats"} <= set(result.output.split())
    result = runner.invoke(args=["jobs", "scheduler"])
    assert result.exit_code != 0
    assert "no cron jobs" in result.output


# -- the example application -----------------------------------------------------------


@pytest.fixture
def example_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "JOBS_QUEUE": unique_name("flask"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}",
    }


@pytest.fixture
def example(example_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples/flask/app.py, imported afresh with the test's Redis and database."""
    for name in ("REDIS_URL", "JOBS_QUEUE", "DATABASE_URL"):
        monkeypatch.setenv(name, example_env[name])
    spec = importlib.util.spec_from_file_location(unique_name("example_app"), EXAMPLE / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered, as an import would: SQLAlchemy resolves the models' annotations there.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        module.app.extensions["jobs"].queue.close()
        with module.app.app_context():
            module.db.engine.dispose()


def test_the_example_enqueues_after_commit_and_not_after_rollback(example: ModuleType) -> None:
    app: flask.Flask = example.app
    client = example.background.client_for(app)
    http = app.test_client()
    assert http.post("/signup?fail=1", json={"email": "x@example.com"}).json == {"id": None}
    assert client.stats().total_jobs == 0  # rolled back: no job
    signup_id = http.post("/signup", json={"email": "ada@example.com"}).get_json()["id"]
    testing.assert_enqueued(client, "welcome", {"signup_id": signup_id})
    (ran,) = testing.drain(client)
    assert ran.result == "Welcome aboard, ada@example.com!"
    assert http.get(f"/signup/{signup_id}").get_json()["welcome"] == ran.result


def test_enqueue_after_commit_drops_the_jobs_of_a_closed_session(example: ModuleType) -> None:
    app: flask.Flask = example.app
    with app.app_context():
        example.db.session.add(example.Signup(email="x@example.com"))
        example.db.session.flush()
        example.background.enqueue_after_commit("welcome", {"signup_id": 1})
        example.db.session.close()  # the transaction ends without a commit
        example.db.session.commit()
        assert example.background.client.stats().total_jobs == 0
        with pytest.raises(jobs.PayloadError):
            example.background.enqueue_after_commit("welcome", object())
    bare = Jobs(flask.Flask(unique_name("bare")))
    bare_app = next(iter(bare._all_apps))
    try:
        with bare_app.app_context(), pytest.raises(jobs.ConfigError, match="session="):
            bare.enqueue_after_commit("t")
    finally:
        bare_app.extensions["jobs"].queue.close()


def _start(
    argv: list[str], env: dict[str, str], log: Path, ready: str, cwd: Path = EXAMPLE
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        wait_until(
            lambda: ready in log.read_text() or proc.poll() is not None,
            timeout=30,
            message=f"{argv} never got ready:\n{log.read_text()}",
        )
        assert proc.poll() is None, log.read_text()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _post(url: str, data: Any) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(data).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.timeout(120)
def test_the_example_under_waitress_with_a_flask_jobs_worker(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    worker = _start(
        [sys.executable, "-m", "flask", "--app", "app", "jobs", "worker", "--workers", "4"],
        example_env,
        tmp_path / "worker.log",
        " running (pid ",
    )
    server: subprocess.Popen[bytes] | None = None
    queue = jobs.RedisQueue.from_url(example_env["REDIS_URL"], name=example_env["JOBS_QUEUE"])
    try:
        server = _start(
            [
                sys.executable,
                "-m",
                "waitress",
                "--threads=8",
                f"--listen=127.0.0.1:{port}",
                "app:app",
            ],
            example_env,
            tmp_path / "server.log",
            "Serving on",
        )
        base = f"http://127.0.0.1:{port}"
        signup_id = _post(f"{base}/signup", {"email": "ada@example.com"})["id"]

        def welcomed() -> str | None:
            with urllib.request.urlopen(f"{base}/signup/{signup_id}", timeout=10) as response:
                welcome: str | None = json.loads(response.read())["welcome"]
                return welcome

        assert wait_until(welcomed, timeout=20) == "Welcome aboard, ada@example.com!"

        # 8 threads enqueue through the server's 8 threads at once: every id distinct,
        # every job run once with its own payload.
        payloads = [{"thread": t, "n": n} for t in range(8) for n in range(25)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda p: _post(f"{base}/echo", p)["job_id"], payloads))
        assert len(set(ids)) == len(payloads)
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        done = client.wait_all(ids, timeout=30)
        assert [job.result for job in done] == payloads
        assert all(job.attempts == 1 for job in done)
        stats = client.stats()
        assert (stats.total_jobs, stats.completed_jobs) == (len(payloads) + 1, len(payloads) + 1)

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "worker.log").read_text()
        assert queue.workers() == []
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        queue.close()


CRON_APP = """
import os

import flask

import jobs
from jobs.contrib.flask import Jobs

app = flask.Flask(__name__)
app.config.update(JOBS_REDIS_URL=os.environ["REDIS_URL"], JOBS_QUEUE=os.environ["JOBS_QUEUE"])
background = Jobs(app)
background.schedule(jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="tick"))


@background.job("tick")
def tick(ctx, payload):
    return flask.current_app.name
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["scheduler", "worker --scheduler"])
def test_flask_jobs_scheduler_fires_the_cron_jobs(
    how: str, example_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "cronapp.py").write_text(CRON_APP)
    flask_jobs = [sys.executable, "-m", "flask", "--app", "cronapp", "jobs"]
    procs = [
        _start(
            [*flask_jobs, *how.split()], example_env, tmp_path / "a.log", " running (pid ", tmp_path
        )
    ]
    queue = jobs.RedisQueue.from_url(example_env["REDIS_URL"], name=example_env["JOBS_QUEUE"])
    try:
        if how == "scheduler":
            procs.append(
                _start(
                    [*flask_jobs, "worker"],
                    example_env,
                    tmp_path / "b.log",
                    " running (pid ",
                    tmp_path,
                )
            )
        client = jobs.Client(jobs.ClientConfig(queue=queue))
        done = wait_until(lambda: client.list_jobs(jobs.JobStatus.COMPLETED, limit=1), timeout=20)
        assert done[0].id.startswith("cron:tick:")
        assert done[0].result == "cronapp"
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        queue.close()
