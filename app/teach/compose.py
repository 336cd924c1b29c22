"""Taught bundles on disk: <taught_dir>/<name>/<version>/ holding the head graph, metadata naming
the backbone (name, version, sha256), labels and a card; written atomically, versioned, deleted.
Every publish or delete bumps the change stamp (app/teach/stamp.py) so other processes follow."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app import card
from app.bundle import (
    METADATA_FILE,
    Artifact,
    BackboneRef,
    Bundle,
    BundleMetadata,
    Metrics,
    Outputs,
    ProbsOutput,
    Provenance,
)
from app.bundle_write import atomic_write, write_bundle
from app.card import CardData, Licence, Section
from app.fsutil import check_folder, file_lock, fsync_dir, make_dirs_durably, visible_entries
from app.numtext import ascii_uint
from app.teach.errors import InvalidModelName, TaughtModelLimit
from app.teach.head import Head
from app.teach.stamp import bump

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_STAGING = ".staging"
# Publishing a version and deleting versions hold this lock (all processes): 'highest version,
# deleted or not, + 1' and the renames are one step, so concurrent deletes and teaches neither
# reuse a number nor trip over each other's folders.
_LOCK = ".lock"
# A writer killed mid-way (SIGKILL, OOM, power) leaves its folder in .staging; a write or a
# delete in progress is seconds old, so anything older than this is such a leftover.
STAGING_LEFTOVER_S = 3600.0
# <root>/.deleted-versions/<name>: the highest version number a deleted version of <name> had,
# so re-teaching never reuses it (name@2 must not come to mean another model after a delete).
_DELETED = ".deleted-versions"


def _highest_deleted(root: Path, name: str) -> int:
    try:
        return int((root / _DELETED / name).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return 0


def _remember_deleted(root: Path, name: str, versions: Sequence[str]) -> None:
    top = max(
        [_highest_deleted(root, name), *(n for v in versions if (n := ascii_uint(v)) is not None)]
    )
    atomic_write(root / _DELETED / name, str(top).encode("ascii"))


def sweep_staging(root: Path, older_than_s: float = STAGING_LEFTOVER_S) -> int:
    """Remove the leftovers of writers that died before their rename (never a live write)."""
    staging = root / _STAGING
    if not staging.is_dir():
        return 0
    n = 0
    for entry in staging.iterdir():
        with contextlib.suppress(OSError):
            if time.time() - entry.stat().st_mtime > older_than_s:
                shutil.rmtree(entry)
                n += 1
    return n


def check_model_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidModelName(
            f"Invalid model name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return name


def versions_on_disk(root: Path, name: str) -> list[str]:
    folder = root / name
    if not folder.is_dir():
        return []
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):  # deleted meanwhile
        return []
    found = [
        v for v in entries if ascii_uint(v) is not None and (folder / v / METADATA_FILE).is_file()
    ]
    return sorted(found, key=int)


@dataclass(frozen=True)
class Room:
    """How many taught models, and versions of one model, may be kept (each is loaded by every
    server process, so neither may grow without bound)."""

    max_models: int = 100
    max_versions: int = 20


def check_room(root: Path, name: str, room: Room) -> None:
    """TaughtModelLimit (409) unless one more version of `name` fits: checked when a job is
    submitted (an answer at once) and again when it publishes, under the lock. 503 first when
    the taught models' folder was removed or replaced (a job was accepted, then failed)."""
    check_folder(root)
    versions = versions_on_disk(root, name)
    if len(versions) >= room.max_versions:
        raise TaughtModelLimit(
            f"Model {name!r} already has {len(versions)} versions (at most "
            f"{room.max_versions}, IMGCLASS_TEACH_MAX_VERSIONS); delete one it no longer needs "
            f"(DELETE /v1/models/{name}@{versions[0]}) and teach again."
        )
    if versions:
        return  # a new version of a model already kept
    models = [n for n in visible_entries(root) if versions_on_disk(root, n)]
    if len(models) >= room.max_models:
        raise TaughtModelLimit(
            f"{len(models)} taught models are kept (at most {room.max_models}, "
            "IMGCLASS_TEACH_MAX_MODELS); delete one (DELETE /v1/models/<name>) or teach a new "
            "version of an existing one."
        )


@dataclass(frozen=True)
class TaughtSpec:
    """Everything about a taught model except its weights."""

    name: str
    labels: tuple[str, ...]
    backbone: Bundle
    catalog: str
    n_items: int
    metrics: Metrics
    description: str
    seed: int
    training_time_s: float
    notes: str


def taught_metadata(spec: TaughtSpec, head: Head) -> BundleMetadata:
    bb = spec.backbone.metadata
    emb = bb.outputs.embedding
    if emb is None:
        raise ValueError(f"backbone {bb.name!r} has no embedding output")
    import onnx  # here, not at the top: a worker that never teaches does not hold it

    from app.teach.graph import HEAD_OPSET

    return BundleMetadata(
        name=spec.name,
        version="0",  # set when the version folder is claimed
        # to the millisecond, as job times are: withdraw_published tells versions of one second apart
        created_at=datetime.fromisoformat(datetime.now(UTC).isoformat(timespec="milliseconds")),
        description=spec.description
        or f"Taught from catalog {spec.catalog!r} on the {bb.name!r} backbone.",
        input=bb.input,
        outputs=Outputs(probs=ProbsOutput(kind="softmax"), embedding=emb),
        num_classes=len(spec.labels),
        metrics=[spec.metrics],
        provenance=Provenance(
            data_source=f"catalog {spec.catalog!r}: {spec.n_items} labelled items",
            architecture=(
                f"softmax regression head (L2 {head.l2:g}, {head.iterations} iterations) "
                f"on the {emb.dim}-d unit embedding of {bb.name!r}"
            ),
            pretrained_weights=f"{bb.name} v{bb.version} sha256 {bb.artifact.sha256}",
            weights_license=bb.provenance.weights_license,
            seed=spec.seed,
            training_time_s=round(spec.training_time_s, 3),
            hardware=f"{platform.machine()} CPU, {os.cpu_count()} cores",
            library_versions={"numpy": np.__version__, "onnx": onnx.__version__},
            opset=HEAD_OPSET,
            notes=spec.notes,
        ),
        artifact=Artifact(sha256="0" * 64, bytes=1),  # recomputed by write_bundle
        backbone=BackboneRef(
            name=bb.name,
            version=bb.version,
            sha256=bb.artifact.sha256,
            dim=emb.dim,
            catalog=spec.catalog,
        ),
    )


def decision_text(meta: BundleMetadata, labels: Sequence[str]) -> tuple[str, ...]:
    """For two classes, one sentence: the yes/no decision the predictions carry, or that
    there is none (two ordinary categories are ranked like any classes)."""
    if len(labels) != 2:
        return ()
    m = meta.primary_metrics
    if m is not None and m.threshold is not None and m.positive_label in labels:
        neg = labels[1 - labels.index(m.positive_label)]
        return (
            f"A yes/no model: `{m.positive_label}` when its probability is at least "
            f"{m.threshold:g} (the best-F1 cut on the held-out scores), else `{neg}`; every "
            "prediction carries this `decision`.",
        )
    return (
        "Two categories, not a yes/no question: predictions rank both labels like any "
        "classifier's, with no threshold and no `decision`. Teach again with `positive_label` "
        "for a yes/no decision on one of them.",
    )


def render_card(meta: BundleMetadata, labels: Sequence[str], summary: Sequence[str]) -> str:
    """The model card, by app/card.py's one renderer, from the metadata and the held-out
    figures of this teaching (nothing typed in)."""
    bb = meta.backbone
    sections = [Section("Held-out results in words", bullets=tuple(summary))]
    if bb is not None:
        sections.append(
            Section(
                "How it was taught",
                paragraphs=(
                    f"A softmax-regression head on the stored embeddings of catalog "
                    f"`{bb.catalog}`, computed by backbone `{bb.name}` v{bb.version} (sha256 "
                    f"{bb.sha256[:12]}...). It is served on that backbone, one backbone pass per "
                    "request, and refused if the backbone changes.",
                    *decision_text(meta, labels),
                ),
            )
        )
    licences: tuple[Licence, ...] = ()
    if meta.provenance.weights_license:
        licences = (Licence("backbone weights", meta.provenance.weights_license),)
    return card.render_card(
        CardData(
            metadata=meta,
            labels=tuple(labels),
            sections=tuple(sections),
            limitations=(
                "It knows only these classes and answers one of them for any picture.",
                "The held-out figures come from the catalog's own pictures; on a different "
                "kind of picture (another style, camera or background) accuracy is unknown.",
            ),
            licences=licences,
            reproduce=f"POST /v1/catalogs/{bb.catalog}/train with the same items and seed"
            if bb is not None
            else None,
        )
    )


def write_taught(
    root: Path, spec: TaughtSpec, head: Head, summary: Sequence[str], room: Room | None = None
) -> tuple[Path, str]:
    """Write a new version atomically: assembled in a staging folder, then renamed to
    <root>/<name>/<version>/, the number claimed under the lock that deletes hold too (and
    `room` checked under it, so concurrent jobs cannot pass the bound together)."""
    check_model_name(spec.name)
    dim = spec.backbone.metadata.outputs.embedding.dim  # type: ignore[union-attr]
    from app.teach.graph import head_model  # onnx: only a worker that teaches holds it

    model_bytes = head_model(head, dim).SerializeToString()
    staging = root / _STAGING
    make_dirs_durably(staging)  # never recreates a data folder moved away (fsutil.check_folder)
    sweep_staging(root)
    with file_lock(root / _LOCK):
        check_room(root, spec.name, room or Room())
        (root / spec.name).mkdir(parents=True, exist_ok=True)  # a delete may have removed it
        existing = versions_on_disk(root, spec.name)
        last = max(int(existing[-1]) if existing else 0, _highest_deleted(root, spec.name))
        version = str(last + 1)
        meta = taught_metadata(spec, head).model_copy(update={"version": version})
        work = Path(tempfile.mkdtemp(dir=staging, prefix=f"{spec.name}-{version}-"))
        try:
            bundle = write_bundle(
                work / spec.name,
                model_bytes=model_bytes,
                metadata=meta,
                labels=spec.labels,
                model_card=render_card(meta, spec.labels, summary),
            )
            target = root / spec.name / version
            os.rename(bundle.path, target)  # a folder already there (not ours) fails it
            fsync_dir(target.parent)
            bump(root)
            return target, version
        finally:
            shutil.rmtree(work, ignore_errors=True)


def delete_taught(root: Path, name: str) -> list[str]:
    """Remove every version of a taught model; it disappears from disk in one rename."""
    folder = root / name
    with file_lock(root / _LOCK):
        versions = versions_on_disk(root, name)
        if not folder.is_dir():
            return []
        _remember_deleted(root, name, versions)
        trash = root / _STAGING / f"deleted-{name}-{secrets.token_hex(4)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, trash)
        fsync_dir(root)
        bump(root)
    shutil.rmtree(trash, ignore_errors=True)
    return versions


def withdraw_published(root: Path, name: str, catalog: str, since: datetime) -> list[str]:
    """Remove what a job whose process died while it published (the version renamed into
    place, the job not yet saved as succeeded) left served, which its failed status must not
    (round 44: a kill at that moment left the job "failed" and its version the model's
    default): the newest version of `name`, when it was taught from `catalog` at or after
    `since` (one job per name at a time, so no later job's)."""
    versions = versions_on_disk(root, name)
    if not versions:
        return []
    newest = versions[-1]
    try:
        meta = BundleMetadata.model_validate_json(
            (root / name / newest / METADATA_FILE).read_bytes()
        )
    except (OSError, ValueError):
        return []
    ours = meta.backbone is not None and meta.backbone.catalog == catalog
    return delete_version(root, name, newest) if ours and meta.created_at >= since else []


def delete_version(root: Path, name: str, version: str) -> list[str]:
    """Remove one version of a taught model (the others stay served)."""
    if ascii_uint(version) is None:
        return []
    with file_lock(root / _LOCK):
        if version not in versions_on_disk(root, name):
            return []
        _remember_deleted(root, name, [version])
        trash = root / _STAGING / f"deleted-{name}-{version}-{secrets.token_hex(4)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(root / name / version, trash)
        fsync_dir(root / name)
        bump(root)
        if not versions_on_disk(root, name):
            shutil.rmtree(root / name, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)
    return [version]
