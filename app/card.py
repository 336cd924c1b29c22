"""The model card (a bundle's README.md), rendered from data: one renderer for every recipe.

Part of the shared core (docs/architecture.md; no TensorFlow, no FastAPI). Every figure on a
card comes from the bundle metadata or from `CardData` fields filled from the run or the config
(recipe sections, reference figures quoted from the YAML, licences): the renderer only formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.bundle import BundleMetadata, InputSpec, Metrics
from app.metrics import Interval, wilson_interval


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str | None = None

    def __post_init__(self) -> None:
        bad = [r for r in self.rows if len(r) != len(self.header)]
        if bad:
            raise ValueError(f"table rows {bad} do not have {len(self.header)} cells")


@dataclass(frozen=True)
class Section:
    """A recipe-specific part of the card (e.g. a confusion matrix, the resize choice)."""

    title: str
    paragraphs: tuple[str, ...] = ()
    bullets: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()


@dataclass(frozen=True)
class Reference:
    """A figure measured elsewhere and quoted for comparison (taken from the config)."""

    what: str  # e.g. "lecture CNN, CIFAR-10 bird vs rest"
    figures: dict[str, float]  # e.g. {"precision": 0.971, "recall": 0.908}; rates in 0..1
    dataset: str | None = None
    n_samples: int | None = None
    source: str | None = None


@dataclass(frozen=True)
class Licence:
    what: str  # e.g. "pretrained weights"
    licence: str


@dataclass(frozen=True)
class CardData:
    metadata: BundleMetadata
    labels: tuple[str, ...] = ()
    facts: dict[str, str] = field(default_factory=dict)  # model facts, e.g. parameters
    sections: tuple[Section, ...] = ()
    references: tuple[Reference, ...] = ()
    limitations: tuple[str, ...] = ()
    licences: tuple[Licence, ...] = ()
    reproduce: str | None = None  # a command
    max_labels_listed: int = 20


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def interval_text(iv: Interval) -> str:
    return f"{pct(iv.low, 1)}-{pct(iv.high, 1)} ({iv.k}/{iv.n}, {iv.level:.0%} {iv.method})"


def table_lines(t: Table) -> list[str]:
    lines = [f"{t.caption}", ""] if t.caption else []
    lines.append("| " + " | ".join(t.header) + " |")
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(row) + " |" for row in t.rows]
    return lines


def section_lines(s: Section) -> list[str]:
    lines = [f"## {s.title}", ""]
    for p in s.paragraphs:
        lines += [p, ""]
    if s.bullets:
        lines += [f"- {b}" for b in s.bullets] + [""]
    for t in s.tables:
        lines += [*table_lines(t), ""]
    return lines


def input_text(spec: InputSpec) -> str:
    text = (
        f"{spec.height}x{spec.width} {spec.color} ({spec.channels} channel"
        f"{'s' if spec.channels > 1 else ''}), resize `{spec.resize.mode}` with "
        f"{spec.resize.interpolation} interpolation, pixels mapped to "
        f"{spec.pixel_range[0]:g}..{spec.pixel_range[1]:g}"
    )
    norm = spec.normalization
    text += (
        ", normalised inside the graph"
        if norm.in_graph
        else f", normalised by the server with mean {norm.mean} / std {norm.std}"
    )
    if spec.invert is True:
        text += "; gray levels inverted before resizing"
    elif spec.invert == "auto":
        text += "; inverted before resizing when the image border is light (`invert: auto`)"
    return text


def _accuracy_interval(m: Metrics) -> str:
    if m.accuracy is None:
        return "n/a"
    k = round(m.accuracy * m.n_samples)
    return f"{pct(m.accuracy)} [{interval_text(wilson_interval(k, m.n_samples))}]"


def _decision_accuracy(m: Metrics) -> str:
    """A binary row's precision, recall and F1 are at its threshold, its accuracy is the top
    label's: where the two accuracies differ, the one at the threshold (what `decision`
    answers) is said too (round 44: a card said 83.3% beside figures of an 87.5% decision)."""
    counts = [m.extra.get(k) for k in ("tp", "fp", "fn", "tn")]
    if m.threshold is None or m.accuracy is None or any(c is None for c in counts):
        return ""
    right = round(float(counts[0] or 0) + float(counts[3] or 0))
    if right == round(m.accuracy * m.n_samples):
        return ""
    return (
        f"{m.dataset} ({m.split}, n={m.n_samples:,}): at the threshold (what `decision` "
        f"answers) {right:,} of {m.n_samples:,} are right, {pct(right / m.n_samples)}; the "
        "accuracy column counts the top label."
    )


def metrics_section(metrics: Sequence[Metrics]) -> Section:
    header: tuple[str, ...] = ("data set", "split", "n", "accuracy [95% interval]", "top-5")
    header += ("precision", "recall", "F1", "threshold", "evaluated with")
    rows = tuple(
        (
            m.dataset,
            m.split,
            f"{m.n_samples:,}",
            _accuracy_interval(m),
            pct(m.top5_accuracy),
            pct(m.precision),
            pct(m.recall),
            pct(m.f1),
            "n/a" if m.threshold is None else f"{m.threshold:g} on P({m.positive_label})",
            m.evaluated_with,
        )
        for m in metrics
    )
    notes = tuple(
        f"{m.dataset} ({m.split}, n={m.n_samples:,}): {m.notes}" for m in metrics if m.notes
    ) + tuple(note for m in metrics if (note := _decision_accuracy(m)))
    return Section(
        "Metrics",
        paragraphs=("Intervals: Wilson score interval on the recorded sample size.",),
        bullets=notes,
        tables=(Table(header, rows),) if rows else (),
    )


def _reference_text(r: Reference) -> str:
    def figure(k: str, v: float) -> str:
        text = f"{k} {pct(v, 1)}"
        if r.n_samples is not None and r.n_samples <= 1000:  # small samples: show the count
            text += f" ({round(v * r.n_samples)}/{r.n_samples})"
        return text

    figures = ", ".join(figure(k, v) for k, v in r.figures.items())
    where = ", ".join(
        x
        for x in (
            r.dataset,
            f"n={r.n_samples:,}" if r.n_samples is not None else None,
            f"source: {r.source}" if r.source else None,
        )
        if x
    )
    return f"{r.what}: {figures}" + (f" ({where})" if where else "")


def model_section(data: CardData) -> Section:
    meta = data.metadata
    prov = meta.provenance
    probs = meta.outputs.probs
    bullets = [f"Architecture: `{prov.architecture}`"]
    bullets += [f"{k}: {v}" for k, v in data.facts.items()]
    if prov.pretrained_weights:
        bullets.append(
            f"Pretrained weights: {prov.pretrained_weights}"
            + (f" (licence: {prov.weights_license})" if prov.weights_license else "")
        )
    bullets.append(f"Input `{meta.input.name}`: {input_text(meta.input)}")
    outputs = f"Outputs: `{probs.name}` ({meta.num_classes} classes, {probs.kind})"
    emb = meta.outputs.embedding
    if emb is not None:
        norm = "L2-normalised" if emb.l2_normalized else "not L2-normalised"
        outputs += f", `{emb.name}` ({emb.dim}-d, {norm})"
    bullets.append(outputs)
    if data.labels:
        shown = data.labels[: data.max_labels_listed]
        more = len(data.labels) - len(shown)
        bullets.append(
            f"Classes ({len(data.labels)}): {', '.join(shown)}"
            + (f", ... ({more} more)" if more else "")
        )
    return Section("Model", bullets=tuple(bullets))


def provenance_section(meta: BundleMetadata) -> Section:
    p = meta.provenance
    items: list[tuple[str, object]] = [
        ("Data", p.data_source + (f" ({p.data_version})" if p.data_version else "")),
        ("Seed", p.seed),
        ("Epochs", p.epochs),
        ("Training time", None if p.training_time_s is None else f"{p.training_time_s:g} s"),
        ("Hardware", p.hardware),
        ("ONNX opset", p.opset),
        ("Git commit", p.git_commit),
        ("Libraries", ", ".join(f"{k} {v}" for k, v in p.library_versions.items()) or None),
        ("Notes", p.notes),
    ]
    bullets = tuple(f"{k}: {v}" for k, v in items if v is not None)
    return Section("Provenance", bullets=bullets)


def render_card(data: CardData) -> str:
    """Markdown for a bundle's README.md."""
    meta = data.metadata
    lines = [f"# Model card: `{meta.name}` (version {meta.version})", ""]
    if meta.description:
        lines += [meta.description, ""]
    lines += section_lines(model_section(data))
    if meta.metrics:
        lines += section_lines(metrics_section(meta.metrics))
    for s in data.sections:
        lines += section_lines(s)
    if data.references:
        lines += section_lines(
            Section(
                "Reference figures (measured elsewhere, on other data; for orientation only)",
                bullets=tuple(_reference_text(r) for r in data.references),
            )
        )
    lines += section_lines(provenance_section(meta))
    lines += section_lines(
        Section(
            "Limitations", bullets=data.limitations or ("Only evaluated on the data named above.",)
        )
    )
    if data.licences:
        lines += section_lines(
            Section("Licences", bullets=tuple(f"{x.what}: {x.licence}" for x in data.licences))
        )
    if data.reproduce:
        lines += section_lines(Section("Reproduce", paragraphs=(f"`{data.reproduce}`",)))
    return "\n".join(lines).rstrip() + "\n"
