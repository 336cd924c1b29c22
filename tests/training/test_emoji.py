"""Emoji art as drawing data: catalogue labels, rendering, heads, ONNX composition, LOSO."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA, FETCH_HINT
from training.emoji.catalog import (
    CLOTHING_TO_FASHION,
    FASHION_CLASSES,
    STYLES,
    Picture,
    load_catalog,
    split_key,
)
from training.emoji.heads import features, fit_head
from training.emoji.loso import choose_on_validation, run_loso, train
from training.emoji.style_sets import StyleSet, project, projection_for
from training.emoji.tasks import Task

ROOT = Path(__file__).resolve().parents[2]
EMOJI = DATA / "emoji"


@pytest.fixture(scope="module")
def catalog() -> list[Picture]:
    if not (EMOJI / "emoji-datasource" / "emoji.json").is_file():
        pytest.fail(f"emoji art missing in {EMOJI}; {FETCH_HINT}")
    return load_catalog(DATA)


def test_code_points_split_into_emoji_and_skin_tone() -> None:
    assert split_key("1F385-1F3FB") == ("1F385", 1)
    assert split_key("1f936-1f3ff") == ("1F936", 5)
    assert split_key("2603-FE0F") == ("2603", 0)
    assert split_key("1F9D1-200D-1F384") == ("1F9D1-200D-1F384", 0)


def test_every_style_has_santa_in_every_skin_tone_and_the_hard_negatives(catalog) -> None:  # type: ignore[no-untyped-def]
    by_style = {s: [p for p in catalog if p.style == s] for s in STYLES}
    for style, pics in by_style.items():
        santas = Counter((p.short_name, p.tone) for p in pics if p.is_santa)
        names = {p.short_name for p in pics}
        assert {"christmas_tree", "gift", "snowman", "elf"} <= names, style
        if style == "fluent-high-contrast":  # one-colour art: no skin tones drawn
            assert set(santas) == {(n, 0) for n in ("santa", "mrs_claus", "mx_claus")}
        else:
            assert len(santas) == 18, style  # 3 figures x (default + 5 tones)
            tones = {p.tone for p in pics if p.short_name == "elf"}
            assert tones == {0, 1, 2, 3, 4, 5}, style
        assert sum(p.is_santa for p in pics) == sum(santas.values())


def test_bird_and_clothing_labels(catalog) -> None:  # type: ignore[no-untyped-def]
    noto = [p for p in catalog if p.style == "noto"]
    birds = {p.short_name for p in noto if p.bird_label == 1}
    assert {"penguin", "owl", "flamingo", "chicken", "dodo"} <= birds
    assert {p.short_name for p in noto if p.bird_label is None} == {"feather", "wing"}
    assert all(p.bird_label == 0 for p in noto if p.short_name in ("egg", "poultry_leg"))
    assert set(CLOTHING_TO_FASHION.values()) <= set(FASHION_CLASSES)
    for style in STYLES:  # every mapped clothing emoji is drawn in every style
        mapped = {p.short_name for p in catalog if p.style == style and p.fashion_class}
        assert mapped == set(CLOTHING_TO_FASHION), style


def test_labels_agree_across_styles_for_the_same_code_point(catalog) -> None:  # type: ignore[no-untyped-def]
    names: dict[str, set[str]] = {}
    for p in catalog:
        names.setdefault(p.key, set()).add(p.short_name)
    assert all(len(v) == 1 for v in names.values())
    fluent = {p.path.name: p.short_name for p in catalog if p.style == "fluent-flat"}
    assert fluent["santa-claus-medium-dark.svg"] == "santa"
    assert fluent["person-elf-default.svg"] == "elf"
    assert fluent["phoenix-bird.svg"] == "phoenix"


def test_rendering_is_white_backed_and_augmentation_is_seeded(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.render import augment, base_array

    svg = next(p for p in catalog if p.style == "openmoji-black" and p.short_name == "santa")
    png = next(p for p in catalog if p.style == "noto" and p.short_name == "santa")
    for pic in (svg, png):
        a = base_array(pic, 64)
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        assert (a[0, 0] == 255).all()  # transparent corner composited on white
        assert a.min() < 100  # something is drawn
    x1 = augment(svg, 96, np.random.default_rng([0, 1]))
    x2 = augment(svg, 96, np.random.default_rng([0, 1]))
    x3 = augment(svg, 96, np.random.default_rng([0, 2]))
    assert x1.shape == (96, 96, 3)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)


def test_views_all_cover_every_picture_with_seeds_no_aug_view_uses(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.embed import aug_subset, view_seed

    pics = [p for p in catalog if p.style == "twemoji"]
    assert aug_subset(pics, "all1") == list(range(len(pics)))
    aug0 = aug_subset(pics, "aug0")
    assert 0.3 < len(aug0) / len(pics) < 0.45  # positives + 35% of the rest
    assert view_seed("aug0") == 0 and view_seed("aug1") == 1
    assert view_seed("all1") == 101 and view_seed("all0") == 100  # never an aug view's seed
    assert aug_subset(pics, "sty0") == list(range(len(pics)))
    assert view_seed("sty0") == 200 and view_seed("sty1") == 201  # nor an all view's


def test_line_art_traces_the_outline_and_colour_boundaries(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.render import line_art, load_rgba

    for style in ("fluent-flat", "noto"):  # an SVG style and a 64 px PNG style
        duck = next(p for p in catalog if p.style == style and p.short_name == "duck")
        lines = np.asarray(line_art(duck, 128))
        drawn = lines[..., 3] > 0
        assert (lines[drawn][:, :3] == 0).all()  # black lines, nothing else drawn
        shape = np.asarray(load_rgba(duck, 128))[..., 3] > 127
        share = drawn.sum() / shape.sum()
        assert 0.05 < share < 0.6, (style, share)  # lines, not the filled shape
        # Every row the duck spans has a line at both ends of the shape (its outline).
        for row in np.flatnonzero(shape.any(axis=1))[5:-5:10]:
            cols = np.flatnonzero(shape[row])
            near = drawn[row, max(cols[0] - 2, 0) : cols[0] + 3]
            assert near.any(), (style, row)
        thick = np.asarray(line_art(duck, 128, weight=5))[..., 3] > 0
        assert thick.sum() > 1.5 * drawn.sum()


def test_silhouette_fills_the_shape_and_keeps_inner_lines_white(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.render import load_rgba, silhouette

    duck = next(p for p in catalog if p.style == "fluent-flat" and p.short_name == "duck")
    sil = np.asarray(silhouette(duck, 128))
    shape = np.asarray(load_rgba(duck, 128))[..., 3] > 127
    assert (sil[..., 3][~shape] == 0).all()  # nothing outside the drawing
    black = shape & (sil[..., :3].sum(axis=2) == 0)
    white = shape & (sil[..., :3].min(axis=2) == 255)
    assert black.sum() > 0.6 * shape.sum()  # mostly filled
    assert white.sum() > 0.01 * shape.sum()  # the colour boundaries inside stay visible


def test_style_views_are_seeded_on_white_and_both_kinds_occur(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.render import style_view

    owl = next(p for p in catalog if p.style == "twemoji" and p.short_name == "owl")
    views = [style_view(owl, 96, np.random.default_rng([200, 1, k])) for k in range(12)]
    again = style_view(owl, 96, np.random.default_rng([200, 1, 0]))
    assert np.array_equal(views[0], again)
    for v in views:
        assert v.shape == (96, 96, 3) and v.dtype == np.uint8
        assert set(np.unique(v[[0, -1]])) <= set(range(200, 256))  # white edges (placement)
        assert (v.max(axis=2) - v.min(axis=2)).max() < 30  # black and white only, no colour
    dark = [float((v < 128).mean()) for v in views]
    # Line art darkens a little of the canvas, a silhouette much more: both kinds are drawn.
    assert min(dark) < 0.15 and max(dark) > 0.25, dark


def test_products_style_view_is_the_render_style_view_of_the_upload_size(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.products_views import RENDER, view
    from training.emoji.render import style_view

    shirt = next(p for p in catalog if p.style == "noto" and p.fashion_class is not None)
    got = view(shirt, "style", np.random.default_rng(5))
    assert got.shape == (RENDER, RENDER, 3) and got.dtype == np.uint8
    assert np.array_equal(got, style_view(shirt, RENDER, np.random.default_rng(5)))


def _synthetic_sets(seed: int = 0) -> dict[str, StyleSet]:
    """Five 'styles': positives shifted along one direction, each style with its own offset."""
    rng = np.random.default_rng(seed)
    sets = {}
    for i, style in enumerate(["a", "b", "c", "d", "e"]):
        y = (rng.random(400) < 0.05).astype(np.int64)
        y[:3] = 1
        x = rng.normal(size=(400, 8)).astype(np.float32)
        x[:, 0] += 5.0 * y + 0.3 * i  # signal plus a per-style shift
        aug = x + rng.normal(scale=0.1, size=x.shape).astype(np.float32)
        sets[style] = StyleSet(style, [], y, x, [(aug, y)])
    return sets


TOY = Task("toy", ("no", "yes"), lambda p: 0, False, False, "max_f1", cs=(0.1, 1.0))


@pytest.mark.slow
def test_loso_pools_every_fold_and_never_calibrates_on_the_held_out_style() -> None:
    sets = _synthetic_sets()
    res = run_loso(TOY, sets)
    assert set(res["folds"]) == set(sets)
    pooled = res["pooled"]
    assert pooled["n"] == sum(len(s.y) for s in sets.values())
    assert pooled["tp"] == sum(f["tp"] for f in res["folds"].values())
    assert pooled["recall"]["estimate"] > 0.8  # the signal is strong
    # The threshold for style 'a' depends only on the other styles: scrambling 'a' leaves the
    # projection, C and threshold unchanged.
    others = ["b", "c", "d", "e"]
    scrambled = dict(sets)
    scrambled["a"] = StyleSet("a", [], sets["a"].y[::-1].copy(), -sets["a"].x_base, [])
    chosen = []
    for variant in (sets, scrambled):
        psets, _ = project(variant, None, projection_for(variant, others, None))
        c, cal, _ = choose_on_validation(TOY, psets, others, None)
        chosen.append((c, cal.threshold))
    assert chosen[0] == chosen[1]
    assert res["folds"]["a"]["threshold"] == chosen[0][1]


def test_head_features_and_mass_logit() -> None:
    emb = np.zeros((3, 4), np.float32)
    mass = np.array([0.5, 0.9, 0.0], np.float32)
    x = features(emb, mass, use_mass=True)
    assert x.shape == (3, 5)
    assert x[0, 4] == pytest.approx(0.0) and x[1, 4] == pytest.approx(np.log(9), rel=1e-5)
    assert np.isfinite(x).all()
    assert features(emb, mass, use_mass=False).shape == (3, 4)


@pytest.mark.slow
@pytest.mark.parametrize("use_mass", [False, True])
def test_composed_graph_matches_the_numpy_head_on_real_pictures(catalog, use_mass: bool) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.compose import compose, parity
    from training.emoji.embed import Backbone
    from training.emoji.heads import fit_projection
    from training.emoji.render import base_array
    from training.serving_eval import open_model

    backbone = Backbone(ROOT / "models" / "imagenet", threads=1)
    pics = [p for p in catalog if p.style == "twemoji" and p.short_name in ("santa", "owl", "gift")]
    imgs = np.stack([base_array(p, 224) for p in pics]).astype(np.float32)
    emb, mass = backbone(imgs)
    x = features(emb, mass, use_mass)
    y = np.array([int(p.short_name == "owl") for p in pics])
    proj = fit_projection(np.concatenate([x, x + 0.01]), k=4)
    xp = proj(np.concatenate([x, x + 0.01]))
    head = fit_head(xp, np.concatenate([y, y]), c=1.0, use_mass=use_mass).with_projection(proj)
    # Staged as a bundle with the imagenet input spec: the server's runtime checks the I/O.
    meta = backbone.bundle.metadata.model_copy(update={"name": "toy", "num_classes": 2})
    model = open_model(compose(backbone.bundle.model_path, head), metadata=meta, labels=("a", "b"))
    assert parity(model, head, imgs, x) < 1e-4
    out = model.run(imgs)
    probs, emb2 = out.probs, out.embedding
    assert probs.shape == (len(pics), 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(emb2, emb, atol=1e-5)  # the backbone's embedding output is kept


def test_card_notes_come_from_the_config_and_render_in_the_card() -> None:
    """The santa card's lecture's-route section lives in santa-emoji.yaml: a rebuild renders it."""
    import yaml

    from app.bundle import load_bundle
    from app.card import CardData, render_card
    from training.emoji.card import note_sections
    from training.recipes import parse_config

    root = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((root / "training/configs/santa-emoji.yaml").read_text())
    cfg = parse_config(raw)
    sections = note_sections(cfg.card_notes)  # type: ignore[attr-defined]
    assert [s.title for s in sections] == [
        "The lecture's route, measured the same way (not shipped)"
    ]
    meta = load_bundle(root / "models" / "santa").metadata
    card = render_card(CardData(metadata=meta, labels=("not_santa", "santa"), sections=sections))
    assert "## The lecture's route, measured the same way (not shipped)" in card
    assert "16/111 = 14.4%" in card
    raw["card_notes"] = [{"title": "empty"}]
    with pytest.raises(ValueError):
        parse_config(raw)


def test_hard_negative_weight_pushes_the_hard_negatives_down() -> None:
    """Setting (views, C, hard weight): x3 on flagged negatives lowers their scores; x1 is the
    unweighted fit (the shipped heads' setting)."""
    rng = np.random.default_rng(1)
    sets = {}
    for style in ("a", "b"):
        y = np.zeros(300, np.int64)
        y[:20] = 1
        hard = np.zeros(300, bool)
        hard[20:80] = True  # negatives that look half like positives
        x = rng.normal(size=(300, 4)).astype(np.float32)
        x[:, 0] += 3.0 * y + 1.5 * hard
        sets[style] = StyleSet(style, [], y, x, [], None, hard)
    plain = train(TOY, sets, ["a", "b"], (0, 1.0, 1.0))
    heavy = train(TOY, sets, ["a", "b"], (0, 1.0, 3.0))
    x, hard = sets["a"].x_base, sets["a"].hard
    assert heavy.score(x[hard]).mean() < plain.score(x[hard]).mean() - 0.05
    no_flags = {k: StyleSet(k, [], s.y, s.x_base, []) for k, s in sets.items()}
    same = train(TOY, no_flags, ["a", "b"], (0, 1.0, 3.0))
    assert np.allclose(same.score(x), plain.score(x))


def test_identity_card_names_every_kind_of_view() -> None:
    from training.emoji.card import identity_protocol

    text = identity_protocol(["aug0", "all1", "sty0"])
    assert "one of the positives and 35% of the rest" in text
    assert "one of every picture;" in text
    assert "line art" in text and "silhouette" in text
    assert "line art" not in identity_protocol(["aug0", "all1"])
    twice = identity_protocol(["aug0", "all1", "sty0", "sty1", "aug1", "aug2"])
    assert twice.count("redrawn") == 1 and "two of every picture redrawn" in twice
    assert "two more of the positives" in twice


def test_products_presentations_put_the_drawing_on_a_backdrop_or_small_in_a_canvas(catalog) -> None:  # type: ignore[no-untyped-def]
    from training.emoji.products_views import BACKDROPS, PRESENTATIONS, RENDER, view
    from training.emoji.render import load_rgba

    shirt = next(p for p in catalog if p.short_name == "shirt" and p.style == "noto")
    rng = np.random.default_rng(0)
    drawn = view(shirt, "drawing", rng)
    opaque = np.asarray(load_rgba(shirt, RENDER).getchannel("A")) == 255
    assert 0.2 < opaque.mean() < 0.9
    for kind, colour in BACKDROPS.items():
        got = view(shirt, kind, rng)
        assert got.shape == drawn.shape and tuple(got[0, 0]) == colour
        assert np.array_equal(got[opaque], drawn[opaque])  # the drawing itself is unchanged
        assert (got[~opaque] != drawn[~opaque]).any()
    small = view(shirt, "small", rng)
    assert small.shape == (3 * RENDER, 3 * RENDER, 3)
    assert (small[:RENDER] == 255).all() and np.array_equal(
        small[RENDER:-RENDER, RENDER:-RENDER], drawn
    )
    assert set(PRESENTATIONS) == {*BACKDROPS, "small"}
