"""The dashboard's pages, as functions returning HTML text (built from `_html`'s blocks).

Every value from Redis or from the request goes through `e` before it reaches a page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.dashboard._html import STATUSES, Page, badge, chart, duration, e, layout, pretty
from jobs.job import JobStatus

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from jobs.dashboard._data import JobPage, QueueSummary
    from jobs.job import Job, WorkerInfo


def overview(page: Page, summaries: Sequence[QueueSummary], prefix: str, notice: str = "") -> str:
    """Every queue: its counts, rates, head-of-line age and the last hour."""
    if not summaries:
        return layout(
            page,
            "Queues",
            f'<h1>Queues</h1><p class="empty">No queue under the prefix '
            f"<code>{e(prefix)}</code> yet: nothing has been enqueued.</p>",
            prefix=prefix,
        )
    cards = []
    for s in summaries:
        st = s.stats

        def tile(label: str, value: object, status: str = "", css: str = "") -> str:
            inner = f'<span class="n">{e(value)}</span><span class="l">{e(label)}</span>'
            if status:
                href = page.url("/jobs", queue=s.name, status=status)  # noqa: B023
                return f'<a class="tile s-{e(status)} {css}" href="{e(href)}">{inner}</a>'
            return f'<div class="tile {css}">{inner}</div>'

        oldest = "—" if s.oldest_pending_age is None else duration(s.oldest_pending_age)
        tiles = "".join(
            [
                tile("pending", st.pending_jobs, "pending"),
                tile("scheduled", st.scheduled_jobs, "scheduled"),
                tile("waiting", st.waiting_jobs, "waiting"),
                tile("processing", st.processing_jobs, "processing"),
                tile("completed", st.completed_jobs, "completed"),
                tile("failed", st.failed_jobs, "failed", "alert" if st.failed_jobs else ""),
                tile("cancelled", st.cancelled_jobs, "cancelled"),
                tile("lost leases", st.lost_leases, css="warn" if st.lost_leases else ""),
                tile("rejected writes", st.rejected_writes),
                tile("oldest pending", oldest, css="warn" if oldest != "—" else ""),
                tile(
                    "workers", s.workers, css="alert" if not s.workers and st.pending_jobs else ""
                ),
            ]
        )
        rate = s.history.per_minute
        cards.append(
            f'<section class="card" id="queue-{e(s.name)}">'
            f'<h2><a href="{e(page.url("/jobs", queue=s.name))}">{e(s.name)}</a>'
            f'<span class="muted small"> {e(st.total_jobs)} jobs ever · last finished '
            f"{page.when(st.last_processed)}</span></h2>"
            f'<div class="tiles">{tiles}</div>'
            f'<p class="rates">Per minute, last 5 min: <b>{rate("enqueued"):.1f}</b> enqueued · '
            f'<b class="t-ok">{rate("completed"):.1f}</b> completed · '
            f'<b class="t-bad">{rate("failed"):.1f}</b> failed</p>'
            f"{chart(s.history)}</section>"
        )
    return layout(page, "Queues", "<h1>Queues</h1>" + "".join(cards), notice=notice, prefix=prefix)


def _status_tabs(page: Page, queue: str, current: str) -> str:
    return (
        '<nav class="tabs">'
        + "".join(
            f'<a class="tab s-{e(s)}{" on" if s == current else ""}" '
            f'href="{e(page.url("/jobs", queue=queue, status=s))}">{e(s)}</a>'
            for s in STATUSES
        )
        + "</nav>"
    )


def _job_actions(page: Page, job: Job, back: str) -> str:
    buttons = []
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        buttons.append(page.button("Retry", "retry", job.queue, job_id=job.id, back=back))
    if not job.status.is_final:
        buttons.append(
            page.button("Cancel", "cancel", job.queue, job_id=job.id, back=back, style="warn")
        )
    else:
        buttons.append(
            page.button(
                "Delete",
                "delete",
                job.queue,
                job_id=job.id,
                back=back,
                style="danger",
                confirm=f"Delete job {job.id}?",
            )
        )
    return "".join(buttons)


def jobs_list(
    page: Page,
    queue: str,
    status: str,
    result: JobPage,
    job_type: str,
    error_text: str,
    notice: str,
    prefix: str,
    back: str,
) -> str:
    """One page of one status of one queue, with filters, search and actions."""
    when_label = {
        "pending": "ready since",
        "scheduled": "runs at",
        "waiting": "runs from",
        "processing": "started",
    }
    rows = []
    for job in result.jobs:
        moment = (
            job.completed_at
            if job.status.is_final
            else (job.started_at if job.status is JobStatus.PROCESSING else job.run_at)
        )
        error = job.error or ""
        short = error if len(error) <= 120 else error[:117] + "…"
        rows.append(
            "<tr>"
            f'<td class="id"><a href="{e(page.url("/job", queue=queue, id=job.id))}">'
            f"{e(job.id)}</a></td>"
            f"<td>{e(job.type)}</td><td>{badge(job.status.value)}</td>"
            f'<td class="num">{e(job.attempts)}/{e(job.max_retries + 1)}</td>'
            f"<td>{page.when(moment)}</td>"
            f'<td class="err">{e(short)}</td>'
            f'<td class="actions">{_job_actions(page, job, back)}</td></tr>'
        )
    if rows:
        table = (
            '<div class="scroll"><table class="jobs"><thead><tr><th>id</th><th>type</th>'
            f"<th>status</th><th>attempts</th><th>{e(when_label.get(status, 'finished'))}</th>"
            "<th>error</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
        )
    else:
        table = '<p class="empty">No job here.</p>'
    nav = []
    if result.start > 0:
        first = page.url("/jobs", queue=queue, status=status, type=job_type, error=error_text)
        nav.append(f'<a class="btn" href="{e(first)}">&laquo; first</a>')
        if not result.filtered:
            prev = max(0, result.start - 50)
            previous = page.url("/jobs", queue=queue, status=status, start=prev)
            nav.append(f'<a class="btn" href="{e(previous)}">&lsaquo; previous</a>')
    if result.next_start is not None:
        following = page.url(
            "/jobs",
            queue=queue,
            status=status,
            type=job_type,
            error=error_text,
            start=result.next_start,
        )
        nav.append(f'<a class="btn" rel="next" href="{e(following)}">next &rsaquo;</a>')
    if result.filtered:
        position = (
            f"{len(result.jobs)} matching among index entries {result.start + 1}—"
            f"{result.start + result.scanned} of {result.total}"
        )
    else:
        end = result.start + len(result.jobs)
        position = f"{result.start + 1 if result.jobs else 0}—{end} of {result.total}"
    error_field = (
        f'<label>error contains <input name="error" value="{e(error_text)}"></label>'
        if status == "failed"
        else ""
    )
    filters = (
        f'<form class="filters" method="get" action="{e(page.url("/jobs"))}">'
        f'<input type="hidden" name="queue" value="{e(queue)}">'
        f'<input type="hidden" name="status" value="{e(status)}">'
        f'<label>type <input name="type" value="{e(job_type)}"></label>{error_field}'
        '<button class="btn" type="submit">Filter</button></form>'
        f'<form class="filters" method="get" action="{e(page.url("/job"))}">'
        f'<input type="hidden" name="queue" value="{e(queue)}">'
        '<label>job id <input name="id" required></label>'
        '<button class="btn" type="submit">Open</button></form>'
    )
    bulk = ""
    if status == "failed" and page.can_act():
        bulk = (
            f'<form class="bulk" method="post" action="{e(page.url("/action"))}" '
            'data-confirm="Retry every failed job of this type?">'
            f'<input type="hidden" name="csrf" value="{e(page.csrf)}">'
            f'<input type="hidden" name="queue" value="{e(queue)}">'
            f'<input type="hidden" name="back" value="{e(back)}">'
            '<input type="hidden" name="action" value="retry_failed">'
            "<label>Retry every failed job of type "
            f'<input name="type" required value="{e(job_type)}"></label>'
            '<button class="btn primary" type="submit">Retry all</button></form>'
        )
    body = (
        f'<h1><a href="{e(page.url("/"))}">Queues</a> / {e(queue)}</h1>'
        f'{_status_tabs(page, queue, status)}<div class="toolbar">{filters}</div>{bulk}'
        f'<p class="muted">{e(position)}</p>{table}<p class="pager">{"".join(nav)}</p>'
    )
    return layout(page, f"{queue}: {status}", body, notice=notice, prefix=prefix)


def progress_section(progress: tuple[float, str | None]) -> str:
    """A running job's last reported progress: a bar and its message.

    A ``<progress>`` element, styled by the stylesheet: the page's policy allows no
    inline style to size a bar with.
    """
    fraction, message = progress
    fraction = min(max(fraction, 0.0), 1.0) if fraction == fraction else 0.0  # NaN: 0
    percent = f"{fraction * 100:.0f}%"
    text = f'<span class="progress-message">{e(message)}</span>' if message else ""
    return (
        '<h2>Progress</h2><div class="progress">'
        f'<progress max="1" value="{fraction:.4f}" aria-label="progress {percent}">'
        f"{percent}</progress>"
        f'<span class="progress-percent">{percent}</span>{text}</div>'
    )


def job_page(page: Page, job: Job, notice: str, prefix: str, back: str) -> str:
    """Everything about one job: fields, timeline, progress, payload, result, error, traceback."""
    facts = [
        ("status", badge(job.status.value)),
        ("type", e(job.type)),
        ("queue", f'<a href="{e(page.url("/jobs", queue=job.queue))}">{e(job.queue)}</a>'),
        ("priority", e(job.priority)),
        ("attempts", f"{e(job.attempts)} of {e(job.max_retries + 1)}"),
        ("lost leases", e(job.lost_leases)),
        ("timeout", e(duration(job.timeout.total_seconds())) if job.timeout else "none"),
    ]
    steps: list[tuple[str, datetime | None, str]] = [
        ("enqueued", job.created_at, ""),
        ("due", job.run_at, ""),
        ("started (latest attempt)", job.started_at, ""),
        (job.status.value if job.status.is_final else "finished", job.completed_at, ""),
    ]
    if job.started_at and job.run_at and job.started_at >= job.run_at:
        steps[2] = (
            steps[2][0],
            steps[2][1],
            f"waited {duration((job.started_at - job.run_at).total_seconds())}",
        )
    if job.completed_at and job.started_at and job.completed_at >= job.started_at:
        steps[3] = (
            steps[3][0],
            steps[3][1],
            f"ran {duration((job.completed_at - job.started_at).total_seconds())}",
        )
    timeline = "".join(
        f'<li class="{"done" if moment else "todo"}"><span class="what">{e(what)}</span> '
        f'{page.when(moment)} <span class="muted">{e(note)}</span></li>'
        for what, moment, note in steps
    )
    sections = [
        '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>",
        f'<h2>Timeline</h2><ol class="timeline">{timeline}</ol>',
    ]
    if job.progress is not None and job.status is JobStatus.PROCESSING:
        sections.append(progress_section(job.progress))
    if job.error:
        sections.append(f'<h2>Error</h2><pre class="code error">{e(job.error)}</pre>')
    if job.traceback:
        sections.append(f'<h2>Traceback</h2><pre class="code tb">{e(job.traceback)}</pre>')
    sections.append("<h2>Payload</h2>" + pretty(job.payload))
    if job.status is JobStatus.COMPLETED:
        sections.append("<h2>Result</h2>" + pretty(job.result))
    sections.append("<h2>Metadata</h2>" + pretty(dict(job.metadata)))
    body = (
        f'<h1><a href="{e(page.url("/"))}">Queues</a> / '
        f'<a href="{e(page.url("/jobs", queue=job.queue, status=job.status.value))}">'
        f"{e(job.queue)}</a>"
        f' / <span class="id">{e(job.id)}</span></h1>'
        f'<div class="actions">{_job_actions(page, job, back)}</div>' + "".join(sections)
    )
    return layout(page, f"job {job.id}", body, notice=notice, prefix=prefix)


def workers_page(page: Page, by_queue: Mapping[str, Sequence[WorkerInfo]], prefix: str) -> str:
    """The live worker pools of every queue."""
    sections = []
    for queue, workers in by_queue.items():
        rows = "".join(
            f'<tr><td class="id">{e(w.id)}</td><td>{e(w.hostname)}</td>'
            f'<td class="num">{e(w.pid)}</td>'
            f'<td class="num">{e(w.num_workers)}</td><td class="num">{e(w.in_flight)}</td>'
            f"<td>{page.when(w.started_at)}</td><td>{page.when(w.last_seen)}</td></tr>"
            for w in workers
        )
        table = (
            '<div class="scroll"><table><thead><tr><th>pool</th><th>host</th><th>pid</th>'
            "<th>threads</th><th>in flight</th><th>started</th><th>last seen</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
            if workers
            else '<p class="empty">No live worker.</p>'
        )
        sections.append(f'<section class="card"><h2>{e(queue)}</h2>{table}</section>')
    body = "<h1>Workers</h1>" + ("".join(sections) or '<p class="empty">No queue.</p>')
    return layout(page, "Workers", body, prefix=prefix)


def crons_page(page: Page, by_queue: Mapping[str, Sequence[Mapping[str, str]]], prefix: str) -> str:
    """The cron jobs announced on every queue, with their next and last fire."""
    from jobs import _codec

    sections = []
    for queue, crons in by_queue.items():
        rows = []
        for c in crons:
            enabled = c.get("enabled", "")
            on = enabled not in ("0", "false", "False", "")
            last_job = c.get("last_job_id", "")
            link = (
                f'<a class="id" href="{e(page.url("/job", queue=queue, id=last_job))}">'
                f"{e(last_job)}</a>"
                if last_job
                else ""
            )
            rows.append(
                f'<tr><td class="id">{e(c.get("id"))}</td><td>{e(c.get("job_type"))}</td>'
                f"<td><code>{e(c.get('schedule'))}</code></td>"
                f"<td>{badge('enabled' if on else 'disabled')}</td>"
                f"<td>{page.when(_codec.from_ms(c.get('next_run') or None))}</td>"
                f"<td>{page.when(_codec.from_ms(c.get('last_fire') or None))}</td>"
                f"<td>{link}</td></tr>"
            )
        table = (
            '<div class="scroll"><table><thead><tr><th>cron job</th><th>job type</th>'
            "<th>schedule</th><th>state</th><th>next fire</th><th>last fire</th>"
            f"<th>last job</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            if rows
            else '<p class="empty">No cron job.</p>'
        )
        sections.append(f'<section class="card"><h2>{e(queue)}</h2>{table}</section>')
    body = "<h1>Cron jobs</h1>" + ("".join(sections) or '<p class="empty">No queue.</p>')
    return layout(page, "Cron jobs", body, prefix=prefix)


def login_page(page: Page, prefix: str, failed: bool, back: str) -> str:
    """The form that trades the dashboard's secret for a session cookie."""
    error = '<p class="notice bad">Wrong secret.</p>' if failed else ""
    body = (
        f'<h1>Log in</h1>{error}<form class="login" method="post" action="{e(page.url("/login"))}">'
        f'<input type="hidden" name="back" value="{e(back)}">'
        '<label>Dashboard secret <input type="password" name="secret" '
        'autocomplete="current-password" required autofocus></label>'
        '<button class="btn primary" type="submit">Log in</button></form>'
    )
    return layout(page, "Log in", body, prefix=prefix)


def message_page(page: Page, title: str, text: str, prefix: str) -> str:
    """A page that only says something (not found, refused, ...)."""
    return layout(page, title, f"<h1>{e(title)}</h1><p>{e(text)}</p>", prefix=prefix)
