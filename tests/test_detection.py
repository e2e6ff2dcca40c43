"""gpuaug.data.detection: boxes from COCO JSON / CSV, and the loader's (x, (boxes, labels, valid)).

Real data: crops of ``skimage.data.coins``; the boxes are the bounding boxes of the connected
components of its Otsu mask (``skimage.measure.regionprops``), one per coin, so the warped
component of a coin can be checked against its warped box.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpuaug import AugmentConfig
from gpuaug.augment.targets import apply_boxes, apply_mask
from gpuaug.data.detection import DetectionDataset, read_annotations
from gpuaug.loader.factories import flow_from_detection_file

skimage_data = pytest.importorskip("skimage.data")
skimage_filters = pytest.importorskip("skimage.filters")
skimage_measure = pytest.importorskip("skimage.measure")

SIZE = (48, 64)
CONFIG = AugmentConfig(
    rotation_range=20,
    width_shift_range=0.1,
    height_shift_range=0.1,
    zoom_range=0.15,
    horizontal_flip=True,
    vertical_flip=True,
    fill_mode="reflect",
)
CORNERS = [(20, 20), (150, 40), (20, 200), (100, 150)]


@pytest.fixture
def coins(tmp_path: Path) -> dict:
    """4 coin crops (48 x 64 PNGs), their component label maps and boxes, as COCO and CSV."""
    c = skimage_data.coins()
    threshold = skimage_filters.threshold_otsu(c)
    folder = tmp_path / "images"
    folder.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "coin"},
                                                            {"id": 3, "name": "edge"}]}  # fmt: skip
    rows, components = [], {}
    for i, (y, x) in enumerate(CORNERS):
        crop = c[y : y + 96, x : x + 128][::2, ::2]
        name = f"coins_{i}.png"
        Image.fromarray(crop).save(folder / name)
        labels = skimage_measure.label(crop > threshold)
        coco["images"].append({"id": 100 + i, "file_name": name, "width": 64, "height": 48})
        kept = np.zeros_like(labels)
        for k, region in enumerate(p for p in skimage_measure.regionprops(labels) if p.area >= 30):
            r0, c0, r1, c1 = region.bbox  # exclusive ends: xyxy continuous = (c0, r0, c1, r1)
            touches = r0 == 0 or c0 == 0 or r1 == 48 or c1 == 64
            category = 3 if touches else 7
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": 100 + i,
                                        "bbox": [c0, r0, c1 - c0, r1 - r0],
                                        "category_id": category, "iscrowd": 0})  # fmt: skip
            rows.append([name, c0, r0, c1, r1, "edge" if touches else "coin"])
            kept[labels == region.label] = k + 1
        components[name] = kept
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    Image.fromarray(c[:48, :64]).save(folder / "blank.png")  # listed with no box in the CSV
    rows.append(["blank.png", "", "", "", "", ""])
    with open(tmp_path / "boxes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "xmin", "ymin", "xmax", "ymax", "class", "width"])
        writer.writerows([*r, 64] for r in rows)
    return {"folder": folder, "coco": tmp_path / "coco.json", "csv": tmp_path / "boxes.csv",
            "components": components}  # fmt: skip


def test_coco_and_csv_give_the_same_boxes_and_classes(coins):
    coco, table = read_annotations(coins["coco"]), read_annotations(coins["csv"])
    assert coco.classes == ["edge", "coin"]  # COCO: sorted by category id (3, 7)
    assert table.classes == ["coin", "edge"]  # CSV: sorted names
    for name, (boxes, labels) in coco.files.items():
        other_boxes, other_labels = table.files[name]
        np.testing.assert_array_equal(boxes, other_boxes)
        assert [coco.classes[k] for k in labels] == [table.classes[k] for k in other_labels]
    assert table.files["blank.png"][0].shape == (0, 4)


def test_boxes_are_scaled_with_the_image(coins):
    full = DetectionDataset(coins["folder"], coins["coco"], target_size=SIZE)
    half = DetectionDataset(coins["folder"], coins["coco"], target_size=(24, 32))
    torch.testing.assert_close(half.boxes, full.boxes / 2)
    n_boxes = len(json.loads(coins["coco"].read_text())["annotations"])
    assert torch.equal(half.box_valid, full.box_valid) and full.box_valid.sum() == n_boxes
    image, boxes, labels = half[0]
    assert image.shape == (3, 24, 32) and boxes.shape == (len(labels), 4)


def test_an_image_without_boxes_has_no_valid_row(coins):
    dataset = DetectionDataset(coins["folder"], coins["csv"], target_size=SIZE)
    blank = [Path(p).name for p, _ in dataset.samples].index("blank.png")
    assert not dataset.box_valid[blank].any() and dataset.box_valid.any(dim=1).sum() == 4


def test_loader_boxes_hold_the_warped_coins(coins):
    ld = flow_from_detection_file(coins["folder"], coins["coco"], CONFIG, target_size=SIZE,
                                  batch_size=3, seed=0, num_workers=0, progress=False)  # fmt: skip
    dataset = ld.dataset
    seen = 0
    for step, (x, (boxes, labels, valid)) in enumerate(ld):
        replay = ld.replay(0, step)
        assert torch.equal(replay.x, x) and torch.equal(replay.y[0], boxes)
        assert torch.equal(replay.y[2], valid)
        idx = replay.indices
        expected, ok = apply_boxes(dataset.boxes[idx], replay.params, CONFIG, *SIZE,
                                   valid=dataset.box_valid[idx])  # fmt: skip
        assert torch.equal(boxes, expected) and torch.equal(valid, ok)
        assert torch.equal(labels, dataset.labels[idx])
        for row, i in enumerate(idx.tolist()):
            name = Path(dataset.samples[i][0]).name
            if name not in coins["components"]:
                continue
            comp = torch.from_numpy(coins["components"][name])[None, None]
            const = AugmentConfig(**{**CONFIG.to_dict(), "fill_mode": "constant"})  # no copies
            warped = apply_mask(comp, replay.params[row], const)[0, 0]
            yy, xx = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
            for k in range(int(dataset.box_valid[i].sum())):
                pixels = warped == k + 1
                if not valid[row, k]:
                    continue
                x0, y0, x1, y1 = boxes[row, k]
                inside = (
                    (xx >= x0 - 1e-3) & (xx <= x1 + 1e-3) & (yy >= y0 - 1e-3) & (yy <= y1 + 1e-3)
                )
                assert not (pixels & ~inside).any()
                seen += 1
    assert seen >= 10


@pytest.mark.parametrize("cache", ["device", "host"])
def test_cached_loaders_give_the_same_boxes(coins, cache):
    def run(**kw):
        return list(flow_from_detection_file(coins["folder"], coins["csv"], CONFIG,
                                             target_size=SIZE, batch_size=2, seed=1,
                                             num_workers=0, progress=False, **kw))  # fmt: skip

    for (x0, y0), (x1, y1) in zip(run(), run(cache=cache), strict=True):
        assert torch.equal(x0, x1) and all(torch.equal(a, b) for a, b in zip(y0, y1, strict=True))


def test_min_visibility_is_applied_by_the_loader(coins):
    def valid_count(v):
        ld = flow_from_detection_file(coins["folder"], coins["coco"], CONFIG, target_size=SIZE,
                                      batch_size=4, seed=2, num_workers=0, progress=False,
                                      min_visibility=v)  # fmt: skip
        return sum(int(valid.sum()) for _, (_, _, valid) in ld)

    assert valid_count(0.9) < valid_count(0.0)


def test_the_box_path_dispatches_no_host_sync(coins):
    sync_check = pytest.importorskip("gpuaug.sync_check")
    ld = flow_from_detection_file(coins["folder"], coins["coco"], CONFIG, target_size=SIZE,
                                  batch_size=2, seed=0, num_workers=0, progress=False,
                                  cache="device")  # fmt: skip
    list(ld)
    with sync_check.SyncCheck() as check:
        n = sum(len(x) for x, _ in ld)
    assert n == 4
    check.assert_clean()


def test_a_missing_image_and_a_degenerate_box_are_listed(coins, tmp_path):
    data = json.loads(coins["coco"].read_text())
    data["images"].append({"id": 999, "file_name": "gone.png", "width": 8, "height": 8})
    data["annotations"][0]["bbox"] = [5, 5, 0, 4]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"2 problem\(s\)") as err:
        DetectionDataset(coins["folder"], tmp_path / "bad.json", target_size=SIZE)
    assert "gone.png" in str(err.value) and "degenerate box" in str(err.value)


def test_a_csv_without_the_box_columns_is_refused(tmp_path):
    (tmp_path / "b.csv").write_text("file,x,y\na.png,1,2\n")
    with pytest.raises(ValueError, match="lacks the column"):
        read_annotations(tmp_path / "b.csv")


def test_loader_preview_outlines_the_boxes(coins):
    from gpuaug.preview import MASK_COLORS, grid_layout

    ld = flow_from_detection_file(coins["folder"], coins["coco"], CONFIG, target_size=SIZE,
                                  batch_size=2, seed=0, num_workers=0, progress=False)  # fmt: skip
    picture = ld.preview(n=4, rows=2, seed=0)
    assert picture.size == grid_layout(4, 2, SIZE, CONFIG).size
    pixels = np.asarray(picture).reshape(-1, 3)
    for label in (0, 1):  # both classes' outline colours are drawn
        assert (pixels == MASK_COLORS[label]).all(axis=1).sum() > 50


@pytest.mark.cuda
def test_cuda_box_batches_match_the_cpu_and_never_sync(coins):
    sync_check = pytest.importorskip("gpuaug.sync_check")

    def make(device):
        return flow_from_detection_file(coins["folder"], coins["coco"], CONFIG, target_size=SIZE,
                                        batch_size=2, seed=0, num_workers=0, progress=False,
                                        device=device, cache="device")  # fmt: skip

    cpu = list(make("cpu"))
    gpu_loader = make("cuda")
    list(gpu_loader)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with sync_check.SyncCheck() as check:
            gpu = list(gpu_loader)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    check.assert_clean()
    for (_, (bc, lc, vc)), (_, (bg, lg, vg)) in zip(cpu, gpu, strict=True):
        assert bg.is_cuda and torch.equal(lg.cpu(), lc)
        torch.testing.assert_close(bg.cpu(), bc, atol=1e-3, rtol=0)
        assert torch.equal(vg.cpu(), vc)


# ------------------------------------------------------------------ bad annotation files


def _coco(tmp_path: Path, data) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    return path


def _one_image_coco(**annotation) -> dict:
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], **annotation}
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [{k: v for k, v in ann.items() if v is not None}],
        "categories": [{"id": 1, "name": "x"}],
    }


def test_a_coco_file_that_is_not_an_object_is_refused(tmp_path):
    with pytest.raises(ValueError, match="must hold a JSON object .* got a JSON list"):
        read_annotations(_coco(tmp_path, [1, 2]))


@pytest.mark.parametrize(
    "annotation, problem",
    [
        (dict(bbox=None), "annotation 1 has no bbox"),
        (dict(category_id=None), "annotation 1 has no category_id"),
        (dict(bbox=[1, 2, 3]), r"annotation 1: bbox must be 4 numbers \[x, y, w, h\]; got \[1, 2"),
        (dict(bbox=[1, 2, "3", 4]), "bbox must be 4 numbers"),
    ],
)
def test_a_bad_coco_annotation_is_named(tmp_path, annotation, problem):
    with pytest.raises(ValueError, match=problem):
        read_annotations(_coco(tmp_path, _one_image_coco(**annotation)))


def test_every_coco_problem_is_listed_in_one_error(tmp_path):
    data = _one_image_coco()
    data["images"].append({"id": 2, "width": 8})
    data["annotations"] += [
        {"id": 5, "image_id": 1, "category_id": 1},
        {"id": 6, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]},
        {"id": 7, "image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1]},
        "junk",
    ]
    with pytest.raises(ValueError, match=r"5 problem\(s\)") as err:
        read_annotations(_coco(tmp_path, data))
    text = str(err.value)
    for part in (
        "images[1] has no file_name",
        "annotation 5 has no bbox",
        "annotation 6 of unknown image 9",
        "annotation 7 of unknown category 4",
        "[4] has no keys (a JSON str",
    ):
        assert part in text, text


def test_images_entries_sharing_a_file_name_keep_all_their_boxes(tmp_path):
    data = _one_image_coco()
    data["images"].append({"id": 2, "file_name": "a.png", "width": 8, "height": 8})
    data["annotations"].append({"id": 2, "image_id": 2, "category_id": 1, "bbox": [2, 2, 3, 3]})
    with pytest.warns(UserWarning, match=r"a.png \(ids \[1, 2\]\).*merged|merged: a.png"):
        ann = read_annotations(_coco(tmp_path, data))
    boxes, labels = ann.files["a.png"]
    assert boxes.tolist() == [[1, 1, 5, 5], [2, 2, 5, 5]] and labels.tolist() == [0, 0]


def _csv_bytes(tmp_path: Path, text: str, encoding: str) -> Path:
    path = tmp_path / "b.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_a_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    path = _csv_bytes(
        tmp_path, "filename,xmin,ymin,xmax,ymax,class\na.png,1,1,4,4,x\n", "utf-8-sig"
    )
    assert read_annotations(path).files["a.png"][0].tolist() == [[1, 1, 4, 4]]


def test_a_latin1_csv_is_refused_naming_the_file_and_encoding(tmp_path):
    path = _csv_bytes(tmp_path, "filename,xmin,ymin,xmax,ymax,class\né.png,1,1,4,4,x\n", "latin-1")
    with pytest.raises(ValueError, match=r"b.csv' is not UTF-8 text .*byte 0xe9"):
        read_annotations(path)


def _one_box_dataset(tmp_path: Path, box: str):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    rows = f"filename,xmin,ymin,xmax,ymax,class\na.png,1,1,4,4,x\na.png,{box},x\n"
    (tmp_path / "b.csv").write_text(rows)
    return lambda **kw: DetectionDataset(tmp_path, tmp_path / "b.csv", target_size=(8, 8), **kw)


def test_a_nan_box_is_listed_as_a_problem_of_its_image(tmp_path):
    make = _one_box_dataset(tmp_path, "nan,1,4,4")
    with pytest.raises(ValueError, match=r"1 problem.*a.png \(box\(es\) with NaN or inf"):
        make()


def test_a_box_wholly_outside_its_image_is_left_out_and_counted(tmp_path):
    make = _one_box_dataset(tmp_path, "20,20,30,30")
    with pytest.warns(UserWarning, match=r"1 box\(es\) .* wholly outside .*a.png \(1\)"):
        ds = make()
    assert ds.box_valid.tolist() == [[True]] and ds.outside[0][1] == 1
