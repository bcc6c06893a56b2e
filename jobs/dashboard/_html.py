"""The dashboard's HTML building blocks: escaping, the page frame, badges, the chart.

The pages themselves are in `jobs.dashboard._pages`. Every value that comes from Redis
or from the request goes through `e` (`html.escape`) before it reaches the page; the
only unescaped strings are the fragments these functions build themselves. Charts are
inline SVG drawn here, so a page loads nothing but the dashboard's own stylesheet and
script.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from jobs.job import JobStatus

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from jobs.job import QueueHistory

STATUSES = [s.value for s in JobStatus]


def e(value: object) -> str:
    """``value`` as text that HTML shows literally (quotes included, for attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


class Page:
    """What every page needs: where the app is mounted, who is asking, and the time."""

    def __init__(
        self, base: str, now: datetime, *, actions: bool, csrf: str | None, logged_in: bool
    ) -> None:
        self.base = base
        self.now = now
        self.actions = actions
        self.csrf = csrf
        self.logged_in = logged_in
        #: This page's path and query under the mount point (where a login returns to).
        self.here = "/"

    def url(self, path: str, **query: object) -> str:
        """An absolute path under the mount point, with a query string (escaped later)."""
        params = {k: str(v) for k, v in query.items() if v not in (None, "")}
        return self.base + path + ("?" + urlencode(params) if params else "")

    def can_act(self) -> bool:
        """Whether action buttons are shown (a secret is set and the user has logged in)."""
        return self.actions and self.logged_in and self.csrf is not None

    def button(
        self,
        label: str,
        action: str,
        queue: str,
        *,
        job_id: str = "",
        job_type: str = "",
        back: str = "",
        style: str = "",
        confirm: str = "",
    ) -> str:
        """A one-button POST form for one action, carrying the CSRF token."""
        if not self.can_act():
            return ""
        fields = {
            "action": action,
            "queue": queue,
            "id": job_id,
            "type": job_type,
            "back": back,
            "csrf": self.csrf or "",
        }
        hidden = "".join(
            f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items() if v
        )
        ask = f' data-confirm="{e(confirm)}"' if confirm else ""
        return (
            f'<form class="inline" method="post" action="{e(self.url("/action"))}"{ask}>'
            f'{hidden}<button type="submit" class="btn {e(style)}" name="do" '
            f'value="{e(action)}">{e(label)}</button></form>'
        )

    def when(self, moment: datetime | None) -> str:
        """A UTC time with how long ago (or how soon) it is, in a <time> element."""
        if moment is None:
            return '<span class="muted">—</span>'
        return (
            f'<time datetime="{e(moment.isoformat())}" title="{e(moment.isoformat())}">'
            f"{e(moment.strftime('%Y-%m-%d %H:%M:%S'))} UTC</time> "
            f'<span class="muted">({e(ago(self.now - moment))})</span>'
        )


def duration(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``: a short human duration."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def ago(delta: timedelta) -> str:
    """A signed delta as ``3 min 2 s ago`` or ``in 5.0 s``."""
    seconds = delta.total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(seconds)}"


def badge(status: str) -> str:
    """A status as a coloured pill."""
    return f'<span class="badge s-{e(status)}">{e(status)}</span>'


def pretty(value: Any) -> str:
    """A JSON value, indented, escaped, in a <pre>."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    return f'<pre class="code">{e(text)}</pre>'


def layout(page: Page, title: str, body: str, *, notice: str = "", prefix: str = "") -> str:
    """The whole document around one page's body."""
    nav = "".join(
        f'<a href="{e(page.url(path))}">{e(label)}</a>'
        for path, label in (("/", "Queues"), ("/workers", "Workers"), ("/crons", "Cron jobs"))
    )
    if not page.actions:
        auth = '<span class="muted" title="start with --secret to enable">read-only</span>'
    elif page.logged_in:
        auth = (
            f'<form class="inline" method="post" action="{e(page.url("/logout"))}">'
            f'<input type="hidden" name="csrf" value="{e(page.csrf)}">'
            '<button class="btn link" type="submit">Log out</button></form>'
        )
    else:
        auth = f'<a class="btn" href="{e(page.url("/login", back=page.here))}">Log in to act</a>'
    flash = f'<p class="notice" role="status">{e(notice)}</p>' if notice else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · jobs dashboard</title>"
        f'<link rel="stylesheet" href="{e(page.url("/static/style.css"))}">'
        f'<script src="{e(page.url("/static/app.js"))}" defer></script>'
        "</head><body>"
        f'<header class="top"><a class="brand" href="{e(page.url("/"))}">jobs</a>'
        f'<span class="muted prefix">prefix {e(prefix)}</span>'
        f'<nav>{nav}</nav><div class="auth">{auth}</div></header>'
        f"<main>{flash}{body}</main>"
        f'<footer class="muted">Rendered {e(page.now.strftime("%Y-%m-%d %H:%M:%S"))} UTC'
        "</footer></body></html>"
    )


# -- charts ----------------------------------------------------------------------------


def chart(history: QueueHistory) -> str:
    """The last hour per minute as inline SVG.

    Completed (green), failed (red) and cancelled (grey) as stacked bars, enqueued as a
    blue line; each minute has a tooltip with its counts.
    """
    minutes = history.minutes
    width, height, pad_top, pad_bottom = 600, 120, 12, 16
    plot = height - pad_top - pad_bottom
    slot = width / max(len(minutes), 1)
    top = max(
        [
            1,
            *(m.completed + m.failed + m.cancelled for m in minutes),
            *(m.enqueued for m in minutes),
        ]
    )

    def y(value: float) -> float:
        return pad_top + plot - plot * value / top

    parts = [
        f'<line class="axis" x1="0" y1="{y(0):.1f}" x2="{width}" y2="{y(0):.1f}"/>',
        f'<line class="grid" x1="0" y1="{y(top):.1f}" x2="{width}" y2="{y(top):.1f}"/>',
    ]
    points = []
    for i, m in enumerate(minutes):
        x = i * slot
        tip = (
            f"{m.minute.strftime('%H:%M')} UTC: enqueued {m.enqueued}, completed "
            f"{m.completed}, failed {m.failed}, cancelled {m.cancelled}"
        )
        bars = []
        base = 0
        for value, css in ((m.completed, "ok"), (m.failed, "bad"), (m.cancelled, "off")):
            if value:
                bars.append(
                    f'<rect class="{css}" x="{x + 1:.1f}" y="{y(base + value):.1f}" '
                    f'width="{slot - 2:.1f}" height="{y(base) - y(base + value):.1f}"/>'
                )
                base += value
        parts.append(
            f'<g><title>{e(tip)}</title><rect class="hit" x="{x:.1f}" y="0" '
            f'width="{slot:.1f}" height="{height}"/>{"".join(bars)}</g>'
        )
        points.append(f"{x + slot / 2:.1f},{y(m.enqueued):.1f}")
    parts.append(f'<polyline class="line" points="{" ".join(points)}"/>')
    legend = (
        '<p class="legend"><span class="key ok"></span>completed '
        '<span class="key bad"></span>failed <span class="key off"></span>cancelled '
        '<span class="key line"></span>enqueued</p>'
    )
    summary = (
        f"Last {len(minutes)} minutes: {history.total('enqueued')} enqueued, "
        f"{history.total('completed')} completed, {history.total('failed')} failed"
    )
    return (
        f'<figure class="chart"><div class="scale"><span>{e(top)} / min</span></div>'
        f'<svg viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{e(summary)}" preserveAspectRatio="none">{"".join(parts)}</svg>'
        f'<div class="scale"><span>{len(minutes)} min ago</span><span>now</span></div>'
        f"<figcaption>{e(summary)}</figcaption>{legend}</figure>"
    )
