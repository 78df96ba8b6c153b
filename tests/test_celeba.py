"""CelebA: reading the files, the sample construction and its rare-combination rule, texts, images, the score."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from celeba_fixture import BAND, CELEBA_ATTRIBUTES, write_celeba
from uvlm.data.celeba import (
    ATTRIBUTES,
    FRAGMENTS,
    QUESTIONS,
    CelebA,
    CelebABias,
    CelebAConfig,
    CelebAQuestion,
    attribute_distribution,
    center_crop,
    parse_answer,
    questions_from_samples,
    read_celeba,
    reference_predictions,
    score_answer,
    score_predictions,
    stated_attributes,
)
from uvlm.errors import UserError


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def files(fx):
    return read_celeba(fx.root)


def split(fx, files, **kw):
    kw = {"n_vqa": 120, "n_caption": 120, "n_generation": 120, "min_images": 1, "resolution": 32, **kw}
    return CelebA(CelebAConfig.train(fx.root, **kw), files)


def copy(fx, tmp_path):
    dst = tmp_path / "celeba"
    shutil.copytree(fx.root, dst)
    return dst


def one_line_error(fn, *needles):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


# ----- reading --------------------------------------------------------------------------------------------------------
def test_reader_parses_the_fixture(fx, files):
    assert files.names == fx.names
    assert files.attributes == ATTRIBUTES
    for k, name in enumerate(files.names):
        assert files.truth(k) == {a: fx.labels[name][a] for a in ATTRIBUTES}
        assert files.partition[k] == fx.partition[name]
    other = read_celeba(fx.root, ("Smiling", "Young"))
    assert [bool(v) for v in other.labels[:, 0]] == [fx.labels[n]["Smiling"] for n in fx.names]


def test_crlf_lines_and_a_byte_order_mark_read_the_same(fx, tmp_path, files):
    root = copy(fx, tmp_path)
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        p = root / name
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))
    again = read_celeba(root)
    assert again.names == files.names and np.array_equal(again.labels, files.labels)
    assert np.array_equal(again.partition, files.partition)


def test_optional_files_are_not_needed(fx):
    names = {p.name for p in fx.root.iterdir()}
    assert names == {"img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"}


@pytest.mark.parametrize("what", ["root", "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"])
def test_a_missing_file_names_it(fx, tmp_path, what):
    root = copy(fx, tmp_path)
    if what == "root":
        shutil.rmtree(root)
        one_line_error(lambda: read_celeba(root), "CelebA folder", str(root))
        return
    target = root / what
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    one_line_error(lambda: read_celeba(root), what, "not found")


def _rewrite_attr(root, fn):
    p = root / "list_attr_celeba.txt"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(fn(lines)) + "\n")


@pytest.mark.parametrize("case,needle", [
    ("no count", "line 1"),
    ("header is a row", "line 2"),
    ("count mismatch", "line 1 says"),
    ("short row", "line 5"),
    ("bad value", "other than -1 or 1"),
    ("image missing", "not in"),
])
def test_a_malformed_attribute_file_names_it(fx, tmp_path, case, needle):
    root = copy(fx, tmp_path)
    if case == "no count":
        _rewrite_attr(root, lambda ls: ls[1:])
    elif case == "header is a row":
        _rewrite_attr(root, lambda ls: [ls[0]] + ls[2:])
    elif case == "count mismatch":
        _rewrite_attr(root, lambda ls: ls[:-1])
    elif case == "short row":
        _rewrite_attr(root, lambda ls: ls[:4] + [ls[4].rsplit(" ", 1)[0]] + ls[5:])
    elif case == "bad value":
        _rewrite_attr(root, lambda ls: ls[:4] + [ls[4].replace("-1", " 0", 1)] + ls[5:])
    else:
        (root / "img_align_celeba" / fx.names[7]).unlink()
    msg = one_line_error(lambda: read_celeba(root), needle)
    if case != "image missing":
        assert "list_attr_celeba.txt" in msg


def test_partition_file_and_attribute_names_are_checked(fx, tmp_path, files):
    one_line_error(lambda: read_celeba(fx.root, ("Black_Hair", "Has_Tail")), "'Has_Tail'", "list_attr_celeba.txt")
    root = copy(fx, tmp_path)
    p = root / "list_eval_partition.txt"
    p.write_text(p.read_text() + "999999.jpg 0\n")
    one_line_error(lambda: read_celeba(root), "list_eval_partition.txt", "999999.jpg")
    p.write_text("".join(ln + "\n" for ln in p.read_text().splitlines()[1:-1]))
    one_line_error(lambda: read_celeba(root), "no partition", fx.names[0])
    p.write_text(f"{fx.names[0]} 3\n")
    one_line_error(lambda: read_celeba(root), "line 1", "0 train")
    one_line_error(lambda: CelebAConfig.train(fx.root, attributes=("Smiling",)), "'Smiling'", "templates")


def test_an_unreadable_image_names_it(fx, tmp_path):
    root = copy(fx, tmp_path)
    files = read_celeba(root)
    ca = split(fx, files)
    s = ca.sample("vqa", 0, with_image=False)
    (root / "img_align_celeba" / s.source_image).write_bytes(b"not a jpeg")
    one_line_error(lambda: ca.sample("vqa", 0), s.source_image, "cannot read")


# ----- pools, construction, rare combinations ---------------------------------------------------------------------------
def test_pools_are_disjoint_and_follow_the_partition_file(fx, files):
    train, test = set(files.pool("train")), set(files.pool("test"))
    assert not train & test
    assert {files.names[k] for k in train} == {n for n, p in fx.partition.items() if p in (0, 1)}
    assert {files.names[k] for k in test} == {n for n, p in fx.partition.items() if p == 2}
    tr = split(fx, files)
    te = CelebA(CelebAConfig.test(fx.root, n_vqa=150, n_generation=50, min_images=1, resolution=32), files)
    used_train = {tr.source_image(j) for j in range(tr.config.n_images)}
    used_test = {te.source_image(j) for j in range(te.config.n_images)}
    assert all(fx.partition[n] in (0, 1) for n in used_train)
    assert all(fx.partition[n] == 2 for n in used_test)
    assert {fx.partition[n] for n in used_train} == {0, 1}


@pytest.mark.parametrize("min_images", [1, 2, 3])
def test_every_image_matches_its_ground_truth_and_rare_combinations_are_never_drawn(fx, files, min_images):
    ca = split(fx, files, min_images=min_images)
    combos = {p: Counter(tuple(fx.labels[n][a] for a in ATTRIBUTES) for n, q in fx.partition.items()
                         if q in ({0, 1} if p == "train" else {2})) for p in ("train", "test")}
    eligible = {c for c in combos["train"] if combos["train"][c] >= min_images and combos["test"][c] >= min_images}
    assert len(ca.eligible) == len(eligible)
    for task in ("vqa", "caption", "generation"):
        for s in ca.stream(task, with_image=False):
            assert s.attributes == {a: fx.labels[s.source_image][a] for a in ATTRIBUTES}
            assert tuple(s.attributes[a] for a in ATTRIBUTES) in eligible
            assert not (not s.attributes["Male"] and not s.attributes["No_Beard"])  # never in the fixture


def test_the_ground_truth_is_drawn_before_the_image(fx, files):
    """The combination drawn does not depend on how many images show it: each eligible combination comes up about
    equally often (positive_prob 0.5), though the fixture holds them in very different numbers."""
    ca = split(fx, files, n_vqa=4000, n_caption=0, n_generation=0)
    seen = Counter(tuple(ca.attributes(j).values()) for j in range(4000))
    assert len(seen) == len(ca.eligible)
    expected = 4000 / len(ca.eligible)
    assert max(seen.values()) < 2 * expected and min(seen.values()) > expected / 2
    # and within a combination the image is uniform over the pool's images that show it
    images = Counter(ca.source_image(j) for j in range(4000))
    assert len(images) == len({n for n in fx.names if fx.partition[n] in (0, 1)
                               and tuple(fx.labels[n][a] for a in ATTRIBUTES) in seen})


def test_no_eligible_combination_is_a_user_error(fx, files):
    one_line_error(lambda: split(fx, files, min_images=1000), "min_images")


def test_distribution_report(fx, files):
    ca = split(fx, files, n_vqa=3000, n_caption=0, n_generation=0)
    r = attribute_distribution(ca)
    assert r.n_samples == 3000 and r.total_combinations == 128
    assert r.eligible_combinations == len(ca.eligible) and r.combinations_seen <= r.eligible_combinations
    truths = [ca.attributes(j) for j in range(3000)]
    for a in ATTRIBUTES:
        assert r.positive[a] == pytest.approx(np.mean([t[a] for t in truths]))
        assert r.intended[a] == 0.5
        assert abs(r.positive[a] - r.expected[a]) < 0.05
    # excluding bearded women shifts the shares away from the independent 0.5
    assert r.expected["No_Beard"] > 0.55
    assert r.positive["No_Beard"] > 0.55
    assert r.max_image_repeats >= 3000 / r.distinct_images
    assert "No_Beard" in r.format_table() and "eligible" in r.format_table()
    assert attribute_distribution(ca, "vqa").n_samples == 3000


# ----- determinism ------------------------------------------------------------------------------------------------------
def _dump(ca):
    out = []
    for task in ca.tasks:
        for s in ca.stream(task):
            out.append((s.id, s.source_image, tuple(s.attributes.items()), tuple(s.turns), s.image.tobytes()))
    return out


def test_same_seed_same_bytes_other_seed_different(fx, files):
    kw = dict(n_vqa=20, n_caption=20, n_generation=20)
    a = _dump(split(fx, files, **kw))
    assert a == _dump(CelebA(CelebAConfig.train(fx.root, min_images=1, resolution=32, **kw)))  # re-reading the files
    b = _dump(split(fx, files, seed=1, **kw))
    assert [x[1] for x in a] != [x[1] for x in b]
    assert [x[3] for x in a] != [x[3] for x in b]
    other_name = _dump(split(fx, files, name="train-b", **kw))
    assert [x[1] for x in a] != [x[1] for x in other_name]  # the split name is part of every random stream
    ca = split(fx, files, **kw)
    assert ca.sample("caption", 7).turns == ca.sample("caption", 7).turns  # random access, any order
    assert ca.identity == read_celeba(fx.root).identity


def test_identity_follows_the_files(fx, tmp_path, files):
    root = copy(fx, tmp_path)
    assert read_celeba(root).identity == files.identity
    p = root / "list_eval_partition.txt"
    lines = p.read_text().splitlines()
    name, part = lines[0].split()
    lines[0] = f"{name} {'2' if part != '2' else '0'}"
    p.write_text("\n".join(lines) + "\n")
    assert read_celeba(root).identity != files.identity


# ----- texts ----------------------------------------------------------------------------------------------------------
def test_templates_read_back_unambiguously():
    frags = [f for by_value in FRAGMENTS.values() for fs in by_value.values() for f in fs]
    assert len(set(frags)) == len(frags)
    for a, by_value in FRAGMENTS.items():
        assert len(QUESTIONS[a]) == 10 and len(set(QUESTIONS[a])) == 10
        for v, fs in by_value.items():
            assert len(fs) == 5
            for f in fs:
                assert stated_attributes(f"A person who {f}.") == {a: v}, f


def test_texts_state_exactly_the_drawn_attributes(fx, files):
    ca = split(fx, files)
    sizes = Counter()
    for s in ca.stream("vqa", with_image=False):
        assert 1 <= len(s.turns) <= 4
        for t in s.turns:
            assert t.question in QUESTIONS[t.attribute]
            expected = ("male" if s.attributes["Male"] else "female") if t.attribute == "Male" else \
                ("yes" if s.attributes[t.attribute] else "no")
            assert t.answer == expected
    for task in ("caption", "generation"):
        for s in ca.stream(task, with_image=False):
            text = s.turns[0].answer if task == "caption" else s.instruction
            assert 1 <= len(s.mentioned) <= 7
            assert stated_attributes(text) == {a: s.attributes[a] for a in s.mentioned}, text
            sizes[len(s.mentioned)] += 1
    assert len(sizes) >= 4  # captions vary in how much they state
    conv = ca.sample("vqa", 0, with_image=False).conversations()
    assert conv[0]["value"].startswith("<image>\n") and conv[1]["from"] == "gpt"


def test_records_name_their_source_image(fx, files):
    import json

    ca = split(fx, files)
    for task in ("vqa", "caption", "generation"):
        s = ca.sample(task, 5, with_image=False)
        r = json.loads(json.dumps(s.record()))
        assert r["source_image"] == s.source_image and r["source_image"] in fx.names
        assert r["attributes"] == {a: fx.labels[r["source_image"]][a] for a in ATTRIBUTES}
        assert r["conversations"] == s.conversations() and r["id"] == f"train-{task}-00000005"


def test_a_biased_split_under_represents_the_attribute(fx, files):
    bias = CelebABias.parse("Wearing_Hat:0.02:0")
    ca = split(fx, files, n_vqa=1500, n_caption=600, n_generation=600, bias=bias)
    asked = Counter(t.attribute for s in ca.stream("vqa", with_image=False) for t in s.turns)
    assert asked["Wearing_Hat"] / sum(asked.values()) < 0.05
    assert asked["Male"] / sum(asked.values()) > 0.12
    assert not any("Wearing_Hat" in s.mentioned for s in ca.stream("caption", with_image=False))
    assert any("Wearing_Hat" in s.mentioned for s in ca.stream("generation", with_image=False))  # never biased
    plain = split(fx, files, n_vqa=1500, n_caption=600, n_generation=600)
    assert [ca.source_image(j) for j in range(200)] == [plain.source_image(j) for j in range(200)]
    one_line_error(lambda: CelebABias.parse("Hat:0.1"), "'Hat'")
    one_line_error(lambda: CelebABias.parse("Wearing_Hat:lots"), "numbers")


def test_config_round_trips_and_rejects_bad_values(fx):
    c = CelebAConfig.train(fx.root, bias=CelebABias("Eyeglasses", 0.01, 0.0), min_images=3)
    assert CelebAConfig.from_dict(c.to_dict()) == c
    assert CelebAConfig.from_dict({**c.to_dict(), "bias": "Eyeglasses:0.01:0"}) == c
    one_line_error(lambda: CelebAConfig.from_dict({**c.to_dict(), "seed": "zero"}), "seed")
    one_line_error(lambda: CelebAConfig.train(fx.root, pool="valid"), "pool")
    one_line_error(lambda: CelebAConfig.train(fx.root, resolution=8), "resolution")
    one_line_error(lambda: CelebAConfig.train(fx.root, min_images=0), "min_images")
    t = CelebAConfig.test(fx.root)
    assert (t.pool, t.n_vqa, t.n_caption, t.n_generation, t.max_extra_turns, t.share_images) == \
        ("test", 1000, 0, 500, 0, False)


# ----- images ---------------------------------------------------------------------------------------------------------
def test_centre_crop_and_resize(fx, files):
    ca = split(fx, files, resolution=48)
    s = ca.sample("vqa", 3)
    assert s.image.size == (48, 48) and s.image.mode == "RGB"
    arr = np.asarray(s.image).astype(int)
    # the black bands at the top and bottom of the 178x218 face are cut off: the image is the centre colour
    assert np.abs(arr - np.array(fx.colors[s.source_image])).max() <= 12
    assert ca.image(s.image_index, 96).size == (96, 96)
    # exact geometry on a lossless picture: 178x218 -> rows 20..197
    grid = np.zeros((218, 178, 3), dtype=np.uint8)
    grid[BAND:-BAND] = 200
    grid[BAND, :, 0] = 255
    out = center_crop(Image.fromarray(grid), 178)
    assert np.array_equal(np.asarray(out), grid[BAND:-BAND])


# ----- score ----------------------------------------------------------------------------------------------------------
def test_parse_and_score_hand_worked_answers():
    truth = {**{a: False for a in ATTRIBUTES}, "Male": True, "Eyeglasses": True}
    assert parse_answer("Eyeglasses", "Yes, the person wears glasses.") is True
    assert score_answer("Eyeglasses", truth, "yes") == 1.0
    assert score_answer("Eyeglasses", truth, "No.") == 0.0
    assert score_answer("Eyeglasses", truth, "yes or no") == 0.0  # hedged
    assert score_answer("Eyeglasses", truth, "maybe") == 0.0
    assert score_answer("Eyeglasses", truth, "Yesterday") == 0.0  # whole words only
    assert score_answer("Male", truth, "Male") == 1.0
    assert score_answer("Male", truth, "a man") == 1.0
    assert score_answer("Male", truth, "female") == 0.0
    assert score_answer("Male", truth, "male or female") == 0.0
    assert score_answer("Male", truth, "yes") == 0.0
    assert score_answer("Wearing_Hat", truth, "no") == 1.0
    for attr, hedge in (("Eyeglasses", "yes or no"), ("Wearing_Hat", "No... well, yes."), ("Male", "a man or a woman")):
        assert parse_answer(attr, hedge) is None
        assert score_answer(attr, truth, hedge) == 0.0
        assert score_answer(attr, {a: not v for a, v in truth.items()}, hedge) == 0.0


def test_score_report_columns_and_total(fx, files):
    te = CelebA(CelebAConfig.test(fx.root, n_vqa=70, n_generation=0, min_images=1, resolution=32), files)
    qs = questions_from_samples(te.stream("vqa", with_image=False))
    assert len(qs) == 70
    ref = reference_predictions(qs)
    rep = score_predictions(qs, ref)
    assert rep.columns == (*ATTRIBUTES, "total") and rep.total == 100.0
    qs = [CelebAQuestion("q0", "Male", {"Male": True}), CelebAQuestion("q1", "Male", {"Male": False}),
          CelebAQuestion("q2", "Eyeglasses", {"Eyeglasses": True}), CelebAQuestion("q3", "Eyeglasses", {"Eyeglasses": False})]
    rep = score_predictions(qs, {"q0": "male", "q1": "male", "q2": "yes", "q3": "I cannot tell"})
    assert rep.score("Male") == 50.0 and rep.score("Eyeglasses") == 50.0 and rep.total == 50.0
    assert rep.score("Wearing_Hat") is None
    d = rep.to_dict()
    assert d["unparsed"]["Eyeglasses"] == 1 and d["unparsed"]["total"] == 1 and d["counts"]["total"] == 4
    one_line_error(lambda: score_predictions(qs, {"q0": "male"}), "lack answers")
    one_line_error(lambda: score_predictions(qs, {**{q.id: "yes" for q in qs}, "zz": "no"}), "'zz'")


def test_fixture_is_in_celeba_format(fx):
    lines = (fx.root / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == str(len(fx.names)) and lines[1].split() == list(CELEBA_ATTRIBUTES)
    assert lines[2].startswith("000001.jpg ") and len(lines[2].split()) == 41
    with Image.open(fx.root / "img_align_celeba" / fx.names[0]) as im:
        assert im.size == (178, 218) and im.format == "JPEG"
