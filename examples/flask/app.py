"""An example Flask application with background jobs (``jobs.contrib.flask``).

A sign-up view stores a row and enqueues a welcome job once the transaction commits;
the job (run by ``flask --app app jobs worker``) reads the app's config and updates the
row through Flask-SQLAlchemy. ``/echo`` enqueues a job that returns its payload.

Settings come from the environment: ``REDIS_URL`` (the queue), ``DATABASE_URL`` (the
database; a SQLite file in the instance folder by default).

    $ flask --app app jobs worker          # in one terminal
    $ flask --app app run                  # in another
    $ curl -X POST localhost:5000/signup --json '{"email": "ada@example.com"}'
"""

from __future__ import annotations

import os
from typing import Any

import flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

import jobs
from jobs.contrib.flask import Jobs

app = flask.Flask(__name__)
app.config.update(
    JOBS_REDIS_URL=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
    JOBS_QUEUE=os.environ.get("JOBS_QUEUE", "flask-example"),
    SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", "sqlite:///example.db"),
    GREETING="Welcome aboard",
)
db = SQLAlchemy(app)
background = Jobs(app)


class Signup(db.Model):  # type: ignore[name-defined,misc]
    """One sign-up; ``welcome`` is set by the background job."""

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    welcome: Mapped[str | None]


with app.app_context():
    db.create_all()


@app.post("/signup")
def signup() -> dict[str, Any]:
    """Store a sign-up; its welcome job is enqueued only if the row is committed."""
    row = Signup(email=flask.request.get_json()["email"])
    db.session.add(row)
    db.session.flush()  # the row's id, for the job
    background.enqueue_after_commit("welcome", {"signup_id": row.id})
    if flask.request.args.get("fail"):
        db.session.rollback()  # as an error would: no row, and no job
        return {"id": None}
    db.session.commit()
    return {"id": row.id}


@app.get("/signup/<int:signup_id>")
def show(signup_id: int) -> dict[str, Any]:
    """A sign-up as stored."""
    row = db.get_or_404(Signup, signup_id)
    return {"id": row.id, "email": row.email, "welcome": row.welcome}


@app.post("/echo")
def echo() -> dict[str, Any]:
    """Enqueue a job that returns the posted JSON; its id."""
    return {"job_id": background.enqueue("echo", flask.request.get_json())}


@background.job("welcome")
def welcome(ctx: jobs.JobContext, payload: dict[str, Any]) -> str:
    """Runs inside app.app_context(): the app's config and database are at hand."""
    row = db.session.get(Signup, payload["signup_id"])
    if row is None:
        raise jobs.PermanentError(f"no sign-up {payload['signup_id']}")
    row.welcome = f"{flask.current_app.config['GREETING']}, {row.email}!"
    db.session.commit()
    return row.welcome


@background.job("echo")
def echo_job(ctx: jobs.JobContext, payload: Any) -> Any:
    """Returns its payload."""
    return payload
