import json

import pytest
from conftest import SHARED_WLASL

from wlasl.metadata import MetadataError, load_nslt, load_wlasl, select_nslt, select_subset


def _instance(video_id, split="train", **kw):
    inst = {
        "bbox": [10, 20, 110, 140],
        "fps": 25,
        "frame_end": -1,
        "frame_start": 1,
        "instance_id": 0,
        "signer_id": 7,
        "source": "test",
        "split": split,
        "url": "http://example.invalid",
        "variation_id": 0,
        "video_id": video_id,
    }
    inst.update(kw)
    return inst


def _write(tmp_path, data, name="meta.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def meta(tmp_path):
    data = [
        {"gloss": "book", "instances": [_instance("001"), _instance("002", "val", frame_end=40, frame_start=5)]},
        {"gloss": "drink", "instances": [_instance("003", "test")]},
        {"gloss": "computer", "instances": [_instance("004")]},
    ]
    return _write(tmp_path, data)


def test_parses_fields_and_labels_follow_file_order(meta):
    glosses, instances = load_wlasl(meta)
    assert glosses == ["book", "drink", "computer"]
    by_id = {i.video_id: i for i in instances}
    assert [by_id[v].label for v in ("001", "002", "003", "004")] == [0, 0, 1, 2]
    assert by_id["002"].frame_start == 5 and by_id["002"].frame_end == 40 and by_id["002"].split == "val"
    assert by_id["001"].bbox == (10, 20, 110, 140) and by_id["001"].fps_nominal == 25.0
    assert by_id["001"].signer_id == 7


def test_subset_takes_first_n_glosses(meta):
    glosses, instances = load_wlasl(meta)
    assert {i.video_id for i in select_subset(glosses, instances, 2)} == {"001", "002", "003"}
    assert len(select_subset(glosses, instances, None)) == 4
    with pytest.raises(ValueError, match="1..3"):
        select_subset(glosses, instances, 5)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d[0]["instances"][0].pop("bbox"), r"entry 0 \(gloss 'book'\), instance 0 \(video_id 001\): missing field 'bbox'"),
        (lambda d: d[0]["instances"][1].update(bbox=[1, 2, 3]), r"video_id 002.*'bbox' expected \[xmin"),
        (lambda d: d[1]["instances"][0].update(split="dev"), r"video_id 003.*'split' expected one of"),
        (lambda d: d[1]["instances"][0].update(frame_start=0), r"'frame_start' is 1-based"),
        (lambda d: d[1]["instances"][0].update(frame_start=10, frame_end=5), r"'frame_end' expected -1 or >= frame_start"),
        (lambda d: d[2]["instances"][0].update(signer_id="x"), r"'signer_id' expected int, received str"),
        (lambda d: d[2].pop("gloss"), r"entry 2: missing field 'gloss'"),
        (lambda d: d[2]["instances"].append(_instance("001")), r"video_id 001 appears twice"),
    ],
)
def test_schema_errors_name_entry_and_field(meta, tmp_path, mutate, match):
    data = json.loads(meta.read_text())
    mutate(data)
    with pytest.raises(MetadataError, match=match):
        load_wlasl(_write(tmp_path, data, "bad.json"))


def test_malformed_json_and_wrong_file_kind(tmp_path, meta):
    bad = tmp_path / "trunc.json"
    bad.write_text(meta.read_text()[:50])
    with pytest.raises(MetadataError, match="not valid JSON.*truncated"):
        load_wlasl(bad)
    with pytest.raises(FileNotFoundError, match="WLASL metadata not found"):
        load_wlasl(tmp_path / "nope.json")
    nslt = _write(tmp_path, {"001": {"subset": "train", "action": [0, 1, 10]}}, "nslt.json")
    with pytest.raises(MetadataError, match="pass it with --nslt"):
        load_wlasl(nslt)
    with pytest.raises(MetadataError, match="pass it with --metadata"):
        load_nslt(meta)


def test_nslt_selection_checks_agreement(meta, tmp_path):
    _, instances = load_wlasl(meta)
    ok = _write(tmp_path, {"001": {"subset": "train", "action": [0, 1, 30]}, "003": {"subset": "test", "action": [1, 1, 9]}}, "n.json")
    assert [i.video_id for i in select_nslt(instances, load_nslt(ok))] == ["001", "003"]
    wrong = _write(tmp_path, {"003": {"subset": "test", "action": [2, 1, 9]}}, "w.json")
    with pytest.raises(MetadataError, match="expected class 1 split test.*received class 2"):
        select_nslt(instances, load_nslt(wrong), "w.json")
    unknown = _write(tmp_path, {"999": {"subset": "test", "action": [0, 1, 9]}}, "u.json")
    with pytest.raises(MetadataError, match="999 is not in the metadata"):
        select_nslt(instances, load_nslt(unknown))
    malformed = _write(tmp_path, {"001": {"subset": "train", "action": [0, 1]}}, "m.json")
    with pytest.raises(MetadataError, match=r"'action' expected \[class, start, end\]"):
        load_nslt(malformed)


@pytest.mark.skipif(not SHARED_WLASL.is_dir(), reason="real WLASL sample data (../shared/data/wlasl) not present")
def test_real_wlasl100_metadata_agrees_with_official_nslt():
    glosses, instances = load_wlasl(SHARED_WLASL / "WLASL100_v0.3.json")
    assert len(glosses) == 100 and glosses[:3] == ["book", "drink", "computer"]
    assert len(instances) == 2038
    nslt = load_nslt(SHARED_WLASL / "nslt_100.json")
    chosen = select_nslt(instances, nslt)
    splits = [i.split for i in chosen]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (1442, 338, 258)
    # The class list file gives the same official order.
    official = [line.split("\t")[1] for line in (SHARED_WLASL / "wlasl_class_list.txt").read_text().splitlines()]
    assert glosses == official[:100]


@pytest.mark.parametrize("gloss", ["two\nlines", "cr\rhere", "line\u2028sep", "para\u2029sep", "nel\x85x", ""])
def test_gloss_must_be_one_line(meta, tmp_path, gloss):
    # labels.txt holds one gloss per line: a break would split the class in two.
    data = json.loads(meta.read_text())
    data[1]["gloss"] = gloss
    with pytest.raises(MetadataError, match=r"entry 1: field 'gloss' expected one line of text, received"):
        load_wlasl(_write(tmp_path, data, "bad.json"))


def test_unsafe_id_and_non_finite_bbox_mark_the_instance_not_the_file(meta, tmp_path):
    data = json.loads(meta.read_text())
    data[0]["instances"][0]["video_id"] = "../evil"
    data[1]["instances"][0]["bbox"] = [float("inf"), 0, 10, 10]
    glosses, instances = load_wlasl(_write(tmp_path, data, "m.json"))
    by_id = {i.video_id: i for i in instances}
    assert by_id["../evil"].problem[0] == "video_id" and "not a safe file name" in by_id["../evil"].problem[1]
    assert by_id["003"].problem[0] == "bbox" and "entry 1 (gloss 'drink'), instance 0 (video_id 003)" in by_id["003"].problem[1]
    assert by_id["002"].problem == () and len(instances) == 4
