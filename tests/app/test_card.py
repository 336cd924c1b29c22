"""app/card.py: every figure on a card comes from the data it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bundle import EmbeddingOutput, Metrics, Outputs, load_bundle
from app.card import CardData, Licence, Reference, Section, Table, metrics_section, render_card
from app.metrics import wilson_interval

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_bundle(ROOT / "models" / "digits", verify_hash=False)


def test_card_from_metadata_states_sizes_intervals_and_io(digits) -> None:  # type: ignore[no-untyped-def]
    meta = digits.metadata
    card = render_card(CardData(meta, labels=digits.labels))
    assert card.startswith(f"# Model card: `{meta.name}` (version {meta.version})")
    m = meta.metrics[0]
    assert f"{m.n_samples:,}" in card and m.dataset in card
    iv = wilson_interval(round(m.accuracy * m.n_samples), m.n_samples)
    assert f"{100 * iv.low:.1f}%-{100 * iv.high:.1f}%" in card
    assert meta.outputs.embedding is not None
    assert f"({meta.outputs.embedding.dim}-d" in card
    assert f"({len(digits.labels)} classes" in card
    assert "## Limitations" in card and "Only evaluated on the data named above." in card


def test_figures_follow_the_data_not_the_template(digits) -> None:  # type: ignore[no-untyped-def]
    meta = digits.metadata
    other = meta.model_copy(
        update={"outputs": Outputs(embedding=EmbeddingOutput(dim=77)), "version": "9"}
    )
    card = render_card(CardData(other))
    assert "(77-d" in card and "version 9" in card
    assert f"({meta.outputs.embedding.dim}-d" not in card  # type: ignore[union-attr]


def test_sections_references_licences_and_reproduce(digits) -> None:  # type: ignore[no-untyped-def]
    data = CardData(
        digits.metadata,
        facts={"Parameters": "123,456"},
        sections=(
            Section(
                "Confusion",
                paragraphs=("rows: true",),
                tables=(Table(("", "a", "b"), (("a", "5", "1"), ("b", "0", "7"))),),
            ),
        ),
        references=(
            Reference(
                "lecture CNN", {"precision": 0.971}, dataset="CIFAR-10 test", n_samples=10000
            ),
        ),
        limitations=("only digits",),
        licences=(Licence("weights", "Apache-2.0"),),
        reproduce="python -m training train --config x.yaml",
    )
    card = render_card(data)
    assert "- Parameters: 123,456" in card
    assert "| a | 5 | 1 |" in card and "|---|---|---|" in card
    assert "lecture CNN: precision 97.1% (CIFAR-10 test, n=10,000)" in card
    assert "- weights: Apache-2.0" in card and "- only digits" in card
    assert "`python -m training train --config x.yaml`" in card
    changed = render_card(
        CardData(digits.metadata, references=(Reference("lecture CNN", {"precision": 0.5}),))
    )
    assert "precision 50.0%" in changed and "97.1%" not in changed


def test_table_rows_must_match_the_header() -> None:
    with pytest.raises(ValueError):
        Table(("a", "b"), (("1",),))


def test_a_binary_row_says_its_accuracy_at_the_threshold_where_it_differs() -> None:
    """Round 44: a card's row read accuracy 83.33% (20/24, the top label) beside precision,
    recall and F1 at the threshold, where the decision was right on 21 of 24."""
    row = Metrics(
        dataset="pullover vs coat",
        split="test",
        n_samples=24,
        accuracy=20 / 24,
        precision=11 / 13,
        recall=11 / 12,
        threshold=0.5713,
        positive_label="coat",
        extra={"tp": 11, "fp": 2, "fn": 1, "tn": 10},
    )
    text = "\n".join(metrics_section([row]).bullets)
    assert "at the threshold (what `decision` answers) 21 of 24 are right, 87.5" in text, text
    same = row.model_copy(update={"accuracy": 21 / 24})
    assert not metrics_section([same]).bullets
