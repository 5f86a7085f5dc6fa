"""``OUT/report.html`` of ``medcf benchmark``: ONE self-contained file (images inlined as data URIs).

Sections: the results table (click a header to sort), a validity-vs-proximity
scatter (inline SVG), per task a grid of the same queries explained by every
method (input; counterfactual; difference map with its colour bar; probability
of the target along the path; attribution maps for the baselines) and
per-method notes (why cells are empty, what was not benchmarked).

Example:
    >>> write_report("runs/bench", rows, notes, meta)         # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medcf.benchmark.results import COLUMNS, DEFINITIONS, fmt
from medcf.io import atomic_write_text

CELL = 96  # px of each image in the grid


def _png(a: np.ndarray, size: int = CELL) -> str:
    """uint8 [H, W] or [H, W, 3] -> a data URI of a PNG upscaled (nearest) to ``size``."""
    img = Image.fromarray(a)
    img = img.resize((size, size * a.shape[0] // a.shape[1]), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _gray(x: torch.Tensor) -> np.ndarray:  # [C, H, W] in [-1, 1] -> uint8 [H, W]
    x = x.float().mean(0) if x.shape[0] != 1 else x[0].float()
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def _cmap(d: np.ndarray, name: str, lo: float, hi: float) -> np.ndarray:
    from matplotlib import colormaps

    t = np.clip((d - lo) / (hi - lo), 0, 1) if hi > lo else np.full_like(d, 0.5)
    return (colormaps[name](t)[..., :3] * 255).round().astype(np.uint8)


def _colour_bar(name: str, lo: float, hi: float) -> str:
    bar = _cmap(np.tile(np.linspace(lo, hi, 64)[None], (6, 1)), name, lo, hi)
    return (f'<div class="bar"><img src="{_png(bar, CELL)}" alt="colour bar"><span>{lo:.2g}</span>'
            f'<span style="float:right">{hi:.2g}</span></div>')


def _spark(probs: list | None, w: int = CELL, h: int = 40) -> str:
    """Inline SVG: probability of the target along the path, with the 0.5 line."""
    if not probs:
        return '<div class="muted">no path</div>'
    n = len(probs)
    xs = [w * i / max(n - 1, 1) for i in range(n)]
    ys = [h - h * min(max(float(p), 0.0), 1.0) for p in probs]
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (f'<svg width="{w}" height="{h}" class="spark"><title>p(target) along the path: '
            f'{probs[0]:.3f} -> {probs[-1]:.3f} ({n} frames)</title>'
            f'<line x1="0" x2="{w}" y1="{h / 2}" y2="{h / 2}" stroke="#bbb" stroke-dasharray="2,2"/>'
            f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{pts}"/></svg>')


def _load_examples(row_dir: Path) -> tuple[dict, dict] | None:
    from safetensors.torch import load_file

    f, j = row_dir / "examples.safetensors", row_dir / "examples.json"
    if not (f.is_file() and j.is_file()):
        return None
    return load_file(str(f)), json.loads(j.read_text())


def _cell(method: str, ex: tuple[dict, dict], q: int) -> str:
    t, meta = ex
    if q >= t["original"].shape[0]:
        return '<td class="muted">–</td>'
    if meta["kind"] == "attribution":
        m = t["map"][q, 0].abs().numpy()
        hi = float(m.max()) or 1.0
        return (f'<td><div class="fig"><img src="{_png(_cmap(m, "inferno", 0.0, hi))}" title="|attribution|">'
                f'{_colour_bar("inferno", 0.0, hi)}<div class="muted">|attribution|</div></div></td>')
    d = t["difference"][q].float().mean(0).numpy()
    m = float(np.abs(d).max()) or 1.0
    info = meta["queries"][q]
    p0, p1 = info.get("prob_original"), info.get("prob_counterfactual")
    probs = f"p {p0:.3f} → {p1:.3f}" if p0 is not None and p1 is not None else ""
    return (f'<td><div class="muted">to {html.escape(str(info.get("target_name")))}; {probs}</div>'
            f'<div class="fig"><img src="{_png(_gray(t["counterfactual"][q]))}" title="counterfactual">'
            f'<div class="muted">counterfactual</div></div>'
            f'<div class="fig"><img src="{_png(_cmap(d, "bwr", -m, m))}" title="difference (x_cf - x)">'
            f'{_colour_bar("bwr", -m, m)}</div><div>{_spark(info.get("path_probs"), 2 * CELL + 6)}</div></td>')


def _grid(out: Path, task: str, methods: list[str]) -> str:
    loaded = {m: _load_examples(out / "rows" / task / m) for m in methods}
    loaded = {m: v for m, v in loaded.items() if v is not None}
    if not loaded:
        return "<p class='muted'>no examples saved</p>"
    n = max(v[0]["original"].shape[0] for v in loaded.values())
    first = next(iter(loaded.values()))[0]["original"]
    head = "".join(f"<th>query {q + 1}</th>" for q in range(n))
    inputs = "".join(f'<td><img src="{_png(_gray(first[q]))}" title="input"></td>' for q in range(first.shape[0]))
    body = [f"<tr><th>input</th>{inputs}</tr>"]
    for m, ex in loaded.items():
        body.append(f"<tr><th>{html.escape(m)}</th>{''.join(_cell(m, ex, q) for q in range(n))}</tr>")
    return f'<table class="grid"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def _scatter(rows: list[dict], w: int = 760, h: int = 360) -> str:
    """Validity (y) against L1 distance x-x_cf (x) for the counterfactual rows, inline SVG."""
    pts = []
    for r in rows:
        try:
            v, d = float(r.get("validity")), float(r.get("l1"))
        except (TypeError, ValueError):
            continue
        if not (math.isnan(v) or math.isnan(d)):
            pts.append((d, v, f"{r['method']} / {r['task']}"))
    if not pts:
        return "<p class='muted'>no counterfactual rows with validity and L1</p>"
    xmax = max(p[0] for p in pts) * 1.15 or 1.0
    pad, right = 50, 220  # room on the right for labels
    sx = lambda d: pad + (w - pad - right) * d / xmax  # noqa: E731
    sy = lambda v: h - pad - (h - 2 * pad) * v  # noqa: E731
    parts = [f'<svg width="{w}" height="{h}" class="scatter">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - right}" y2="{h - pad}" stroke="#333"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#333"/>',
             f'<text x="{(w - right + pad) / 2}" y="{h - 12}" text-anchor="middle">L1 distance |x_cf - x| (lower: closer)</text>',
             f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">validity</text>']
    for v in (0, 0.5, 1):
        parts.append(f'<text x="{pad - 6}" y="{sy(v) + 4}" text-anchor="end">{v}</text>')
    parts.append(f'<text x="{w - right}" y="{h - pad + 16}" text-anchor="end">{xmax:.3g}</text>'
                 f'<text x="{pad}" y="{h - pad + 16}" text-anchor="middle">0</text>')
    for i, (d, v, label) in enumerate(pts):
        colour = ["#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085"][i % 6]
        parts.append(f'<circle cx="{sx(d):.1f}" cy="{sy(v):.1f}" r="5" fill="{colour}">'
                     f'<title>{html.escape(label)}: validity {v:.3f}, L1 {d:.4f}</title></circle>'
                     f'<text x="{sx(d) + 8:.1f}" y="{sy(v) + 4 + 13 * ((i % 4) - 1.5):.1f}" font-size="11">'
                     f'{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}
table.results{border-collapse:collapse;font-size:13px}
table.results th,table.results td{border:1px solid #ccc;padding:3px 6px;text-align:right}
table.results th{cursor:pointer;background:#f3f3f3}table.results td:nth-child(-n+2){text-align:left}
table.grid td,table.grid th{vertical-align:top;padding:4px;font-size:11px}
table.grid img{display:block;margin-bottom:2px;image-rendering:pixelated}
.fig{display:inline-block;vertical-align:top;margin-right:6px}.bar img{height:6px;width:96px}.bar{width:96px;font-size:10px}.muted{color:#888;font-size:11px}
.warn{background:#fff3cd;padding:8px;border:1px solid #e0c060}"""

_SORT = """document.querySelectorAll('table.results th').forEach((th,i)=>th.addEventListener('click',()=>{
const tb=th.closest('table').tBodies[0];const rows=[...tb.rows];const asc=th.dataset.asc!=='1';
th.dataset.asc=asc?'1':'0';const key=r=>{const t=r.cells[i].textContent;const f=parseFloat(t);
return isNaN(f)?t:f};rows.sort((a,b)=>{const x=key(a),y=key(b);if(x===y)return 0;
if(typeof x!==typeof y)return (typeof x==='number')?-1:1;return (x<y?-1:1)*(asc?1:-1)});
rows.forEach(r=>tb.appendChild(r))}));"""


def render_report(out: str | os.PathLike, rows: list[dict], notes: dict, meta: dict) -> str:
    """The report as one HTML string (see module doc)."""
    out = Path(out)
    esc = html.escape
    head = "".join(f'<th title="{esc(DEFINITIONS.get(c, c))}">{c}</th>' for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(r.get(c)) or '–')}</td>" for c in COLUMNS) + "</tr>"
                   for r in rows)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>medcf benchmark ({esc(meta['profile'])})"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>medcf benchmark: {esc(str(meta.get('profile_label', meta['profile'])))}</h1>"]
    if meta.get("profile") != "full":
        parts.append(f"<p class='warn'><b>{esc(meta['profile'])}-profile figures</b>: small models trained for "
                     "minutes; they compare the methods under one budget, not at their best.</p>")
    parts.append(f"<p class='muted'>commit {esc(str(meta.get('commit')))} · {esc(str(meta.get('machine')))} · "
                 f"seed {meta.get('seed')} · device {esc(str(meta.get('device')))} · wall "
                 f"{float(meta.get('wall_s', 0)) / 60:.1f} min · {esc(str(meta.get('finished', '')))}</p>")
    parts.append("<h2>Results</h2><p class='muted'>Click a column to sort; hover a header for its definition. "
                 "– : does not apply or could not be computed (see the notes below).</p>"
                 f"<table class='results'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("<h2>Validity vs proximity</h2>" + _scatter(rows))
    tasks = sorted({r["task"] for r in rows}, key=lambda t: (t != "cardiomegaly", t))
    for task in tasks:
        methods = [r["method"] for r in rows if r["task"] == task]
        parts.append(f"<h2>The same queries, every method: {esc(task)}</h2><p class='muted'>Per method: the "
                     "counterfactual, the difference x_cf - x (blue darker, red brighter; colour bar = its "
                     "scale) and p(target) along the path (dashed: 0.5). Baselines: |attribution| of the "
                     "classifier's decision.</p>" + _grid(out, task, methods))
    parts.append("<h2>Notes per method</h2><ul>")
    by_method: dict[str, list[str]] = {}
    for (m, t), why in sorted(notes.items()):
        if why:
            by_reason: dict[str, list[str]] = {}
            for c, w in why.items():
                by_reason.setdefault(w, []).append(c)
            text = "; ".join(f"{', '.join(cols)}: {w}" for w, cols in by_reason.items())
            by_method.setdefault(m, []).append(f"<i>{esc(t)}</i> — empty {esc(text)}")
    for m, items in by_method.items():
        parts.append(f"<li><b>{esc(m)}</b><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul></li>")
    for m, why in sorted((meta.get("not_benchmarked") or {}).items()):
        parts.append(f"<li><b>{esc(m)}</b>: not benchmarked: {esc(why)}</li>")
    parts.append(f"</ul><script>{_SORT}</script></body></html>")
    return "\n".join(parts)


def write_report(out: str | os.PathLike, rows: list[dict], notes: dict, meta: dict) -> Path:
    path = Path(out) / "report.html"
    atomic_write_text(path, render_report(out, rows, notes, meta))
    return path
