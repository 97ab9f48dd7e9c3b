"""The benchmark runner: every edit of a set x every method -> images, metrics.csv, table.md and
report.html, resumable and shardable so several machines can share a set.

Rows are written to ``metrics.csv`` as they finish, so an interrupted run loses at most one row
and ``resume`` picks up where it stopped; shards write their own folders and ``merge`` rebuilds
one table from them.
"""

from __future__ import annotations

import csv
import html
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .importer import import_spec
from .metrics import BAND_MARGIN, EDITED, ClipScorer, pair_metrics
from .errors import ArgumentError, SpecError
from .spec import EditSpec, RegionKind

VARIANTS: dict[str, tuple[str, dict]] = {
    "multidiffusion": ("multidiffusion", {}),
    "p2p": ("p2p", {}),
    "mrgd": ("mrgd", {}),
    "mrgd-no-guidance": ("mrgd", {"guidance": False}),
    "mrgd-no-total": ("mrgd", {"total_region": False}),
    "mrgd-no-kssa": ("mrgd", {"kssa": False}),
    "mrgd-no-keywords": ("mrgd", {"keyword_selection": False}),
}
TASKS = ("addition", "removal", "attribute")
COLUMNS = ["edit", "task", "method", "seed", "clip", "ssim_e", "ssim_i", "seconds"]
METRICS = (("clip", "CLIP ↑"), ("ssim_e", "SSIM-e ↑"), ("ssim_i", "SSIM-i ↑"))


@dataclass
class Edit:
    id: str
    spec: EditSpec

    @property
    def task(self) -> str:
        kinds = {r.kind for r in self.spec.regions if r.kind in EDITED}
        return next(iter(kinds)).value if len(kinds) == 1 else ("none" if not kinds else "mixed")


def load_set(folder: str | Path) -> list[Edit]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ArgumentError("set", f"not a folder: {folder}")
    edits = []
    # mrgd specs, region files of Tiled Diffusion and the authors (*.json), infotexts (*.txt)
    for path in sorted([*folder.glob("*.json"), *folder.glob("*.txt")]):
        try:
            edits.append(Edit(path.stem, import_spec(path)))
        except SpecError as exc:
            raise SpecError(f"{path.name}: {exc.path}", exc.reason) from exc
    if not edits:
        raise ArgumentError("set", f"no edit specs (*.json, *.txt) in {folder}")
    return edits


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in VARIANTS]
    if unknown or not methods:
        raise ArgumentError("--methods", f"unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}")
    return methods


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 1, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise ArgumentError("--shard", f"expected i/n such as 2/4, got {text!r}") from exc
    if not 1 <= i <= n:
        raise ArgumentError("--shard", f"i must be between 1 and n, got {text}")
    return i, n


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _fmt(value) -> str:
    return "" if value is None else (f"{value:.6f}" if isinstance(value, float) else str(value))


def run(edits: Sequence[Edit], pipeline, methods: Sequence[str], out: Path, clip: ClipScorer | None,
        resume: bool = False, shard: tuple[int, int] = (1, 1), progress: bool = True,
        ssim_e_margin: float = BAND_MARGIN, ssim_e_include_box: bool = False) -> list[dict]:
    """Run and score every (edit, method) of this shard; returns all rows of ``out``."""
    from tqdm.auto import tqdm

    from .runner import run_edit

    i, n = shard
    mine = [e for k, e in enumerate(edits) if k % n == i - 1]
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "metrics.csv"
    done = {(r["edit"], r["method"]) for r in read_rows(csv_path)} if resume else set()
    if not resume and csv_path.exists():
        csv_path.unlink()
    todo = [(e, m) for e in mine for m in methods if (e.id, m) not in done]
    new_file = not csv_path.exists()
    with csv_path.open("a", newline="") as f, tqdm(total=len(todo), disable=not progress, desc="eval",
                                                   unit="edit") as bar:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for edit, method in todo:
            name, options = VARIANTS[method]
            spec = edit.spec.replace(options={**edit.spec.options.to_dict(), **options})
            t0 = time.perf_counter()
            result = run_edit(spec, pipeline, method=name, progress=False)
            seconds = time.perf_counter() - t0
            folder = out / "images" / edit.id
            folder.mkdir(parents=True, exist_ok=True)
            result.source.save(folder / f"{method}-source.png")
            result.target.save(folder / f"{method}-target.png")
            scores = pair_metrics(result.spec, result.source, result.target, clip, ssim_e_margin, ssim_e_include_box)
            writer.writerow({"edit": edit.id, "task": edit.task, "method": method, "seed": result.spec.seed,
                             **{k: _fmt(v) for k, v in scores.items()}, "seconds": f"{seconds:.2f}"})
            f.flush()
            bar.update(1)
    return read_rows(csv_path)


def _means(rows: list[dict]) -> dict[tuple[str, str, str], tuple[float, int]]:
    sums: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        for key, _ in METRICS:
            if r.get(key):
                sums.setdefault((r["task"], r["method"], key), []).append(float(r[key]))
    return {k: (sum(v) / len(v), len(v)) for k, v in sums.items()}


def table(rows: list[dict], methods: Sequence[str] | None = None, clip_note: str = "") -> str:
    """The Table 1 layout: tasks x metrics as columns, one row per method, best in bold."""
    methods = list(methods or dict.fromkeys(r["method"] for r in rows))
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)] + \
        sorted({r["task"] for r in rows} - set(TASKS))
    means = _means(rows)
    counts = {t: len({r["edit"] for r in rows if r["task"] == t}) for t in tasks}
    header = ["Method"] + [f"{t.capitalize()} ({counts[t]}) {label}" if j == 0 else label
                           for t in tasks for j, (_, label) in enumerate(METRICS)]
    best = {}
    for t in tasks:
        for key, _ in METRICS:
            values = [means[(t, m, key)][0] for m in methods if (t, m, key) in means]
            if values:
                best[(t, key)] = max(values)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in methods:
        cells = [m]
        for t in tasks:
            for key, _ in METRICS:
                if (t, m, key) not in means:
                    cells.append("–")
                    continue
                value = means[(t, m, key)][0]
                text = f"{value:.2f}" if key == "clip" else f"{value:.4f}"
                cells.append(f"**{text}**" if math.isclose(value, best[(t, key)]) and len(methods) > 1 else text)
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nMeans over the edits of each task (count in brackets). CLIP: 100 × cosine of the edited box's crop of "
            "the target and its target prompt (removals: the background prompt); SSIM-e: the band around edited "
            "boxes; SSIM-i: outside the edited boxes. Best of each column in bold.")
    return "\n".join(lines) + "\n" + note + (f"\n\n{clip_note}" if clip_note else "") + "\n"


def report_html(rows: list[dict], edits: Sequence[Edit], out: Path, methods: Sequence[str]) -> str:
    """Each edit: its prompts, and the source and target of every method side by side, boxes drawn."""
    by_key = {(r["edit"], r["method"]): r for r in rows}
    parts = ["<!doctype html><meta charset='utf-8'><title>mrgd evaluation</title><style>",
             "body{font-family:sans-serif;margin:1em} .edit{margin:1.5em 0;border-top:1px solid #ccc}",
             ".grid{display:flex;flex-wrap:wrap;gap:1em} .pair{display:flex;gap:4px} figure{margin:0}",
             ".img{position:relative;width:192px;height:192px} .img img{width:100%;height:100%}",
             ".box{position:absolute;border:2px solid} .box.edited{border-style:dashed}",
             "figcaption{font-size:12px} .meta{font-size:12px;color:#555}</style>",
             "<h1>mrgd evaluation</h1>"]
    colors = {RegionKind.INHERENT: "#888", RegionKind.ADDITION: "#3cb44b", RegionKind.REMOVAL: "#e6194b",
              RegionKind.ATTRIBUTE: "#4363d8"}
    for edit in edits:
        if not any((edit.id, m) in by_key for m in methods):
            continue
        boxes = "".join(
            f"<div class='box{' edited' if r.kind in EDITED else ''}' style='left:{r.box[0] * 100:.1f}%;"
            f"top:{r.box[1] * 100:.1f}%;width:{r.box[2] * 100:.1f}%;height:{r.box[3] * 100:.1f}%;"
            f"border-color:{colors[r.kind]}' title='{html.escape(r.kind.value)}'></div>" for r in edit.spec.regions)
        edited = [f"{r.kind.value}: {html.escape(r.source or '∅')} → {html.escape(r.target or '∅')}"
                  for r in edit.spec.regions if r.kind in EDITED]
        parts.append(f"<div class='edit'><h2>{html.escape(edit.id)} <small>({edit.task})</small></h2>"
                     f"<div class='meta'>{'<br>'.join(edited)}</div><div class='grid'>")
        for m in methods:
            row = by_key.get((edit.id, m))
            if row is None:
                continue
            figs = "".join(f"<figure><div class='img'><img src='images/{html.escape(edit.id)}/{m}-{which}.png' "
                           f"alt='{which}'>{boxes}</div><figcaption>{which}</figcaption></figure>"
                           for which in ("source", "target"))
            scores = ", ".join(f"{label.split()[0]} {row[key]}" for key, label in METRICS if row.get(key))
            parts.append(f"<div><b>{m}</b><div class='pair'>{figs}</div><div class='meta'>{scores}</div></div>")
        parts.append("</div></div>")
    return "\n".join(parts) + "\n"


def write_outputs(out: Path, rows: list[dict], edits: Sequence[Edit], methods: Sequence[str], clip_note: str) -> None:
    rows = sorted(rows, key=lambda r: (r["edit"], list(methods).index(r["method"]) if r["method"] in methods else 99))
    with (out / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(table(rows, methods, clip_note))
    (out / "report.html").write_text(report_html(rows, edits, out, methods))


def merge(shards: Sequence[Path], out: Path, edits: Sequence[Edit]) -> list[dict]:
    """One folder from shard folders: their rows and images, and the table and report rebuilt."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], dict] = {}
    notes = []
    for shard in shards:
        if not (shard / "metrics.csv").is_file():
            raise ArgumentError("merge", f"{shard} has no metrics.csv")
        for r in read_rows(shard / "metrics.csv"):
            rows[(r["edit"], r["method"])] = r
        if (shard / "images").is_dir() and shard.resolve() != out.resolve():
            shutil.copytree(shard / "images", out / "images", dirs_exist_ok=True)
        note = shard / "table.md"
        if note.is_file():
            notes.append(note.read_text().rsplit("\n\n", 1)[-1].strip())
    methods = list(dict.fromkeys(r["method"] for r in rows.values()))
    methods = [m for m in VARIANTS if m in methods] + [m for m in methods if m not in VARIANTS]
    clip_note = next((n for n in notes if n.startswith("CLIP scorer")), "")
    write_outputs(out, list(rows.values()), edits, methods, clip_note)
    return read_rows(out / "metrics.csv")


def clip_note(clip: ClipScorer | None, reason: str = "") -> str:
    if clip is None:
        return f"CLIP scorer: none ({reason}); the CLIP column is empty."
    if not clip.meaningful:
        return f"CLIP scorer: {clip.name}. Its CLIP numbers mean nothing: it is a tiny random model for offline runs."
    return f"CLIP scorer: {clip.name}."
