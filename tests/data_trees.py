"""Tiny on-disk dataset trees for tests: VOC, COCO (ToCo layout and official instances JSON), tagged folders.

Plain functions (not fixtures), so that any test can write a tree into its `tmp_path` and compare what a loader
returns with what was written. Every writer returns a dict describing what it wrote: ids per split, the exact
masks (numpy arrays), the image-level labels (class ids, background 0 included) and the class names.

Images are small JPEGs of different sizes; masks are palette PNGs holding class ids with a 255 border around each
object, as in VOC. Everything is deterministic.
"""

import csv
import json
import os

import numpy as np
from PIL import Image

from cpfcte_hf.models.cpfcte.configuration_cpfcte import VOC_CLASSES


def voc_palette() -> list[int]:
    """The VOC colour map, written independently of the package's own (to check palette PNGs read as indices)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def save_palette_png(path: str, mask: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    image.save(path)


def save_jpeg(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def object_image_and_mask(index: int, size: tuple[int, int], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A `(H, W, 3)` image with one rectangle per class in `classes`, and its mask (class ids, 255 borders)."""
    height, width = size
    rng = np.random.default_rng(index)
    image = (rng.uniform(0, 60, size=(height, width, 3))).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for k, class_id in enumerate(classes):
        top, left = 2 + 3 * k, 2 + (width // 3) * k
        bottom, right = min(height - 2, top + height // 2), min(width - 2, left + width // 3)
        mask[top - 1 : bottom + 1, left - 1 : right + 1] = 255
        mask[top:bottom, left:right] = class_id
        image[top:bottom, left:right] = (40 + (10 * class_id) % 200, 200, 255 - (10 * class_id) % 200)
    return image, mask


def write_voc_tree(
    directory,
    *,
    splits: dict | None = None,
    class_names: list[str] | None = None,
    devkit: bool = True,
    mask_folder: str = "SegmentationClassAug",
    split_file_names: dict | None = None,
    cls_labels: bool = False,
) -> dict:
    """Writes `VOCdevkit/VOC2012/...` (or just the VOC2012 content when `devkit=False`) under `directory`.

    Args:
        splits: `{split: number of images}`; default `{"train_aug": 4, "val": 2}`.
        class_names: written to `class_names.txt` when given (else VOC's 21 classes apply).
        mask_folder: `SegmentationClassAug` or `SegmentationClass`.
        split_file_names: `{split: file stem}`, e.g. `{"train_aug": "trainaug"}` to test the alias.
        cls_labels: also write `cls_labels_onehot.npy` (AFA format, no background) for all ids.

    Returns:
        `{"root", "voc_dir", "ids": {split: [...]}, "masks": {id: array}, "labels": {id: [...]},
        "images": {id: path}, "class_names": [...]}`.
    """
    splits = splits or {"train_aug": 4, "val": 2}
    names = list(class_names) if class_names else list(VOC_CLASSES)
    root = os.fspath(directory)
    voc_dir = os.path.join(root, "VOCdevkit", "VOC2012") if devkit else root
    info = {"root": root, "voc_dir": voc_dir, "ids": {}, "masks": {}, "labels": {}, "images": {}, "class_names": names}
    counter = 0
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            item_id = f"2007_{counter:06d}"
            num_fg = len(names) - 1
            classes = sorted({1 + counter % num_fg, 1 + (3 * counter + 1) % num_fg})[: 1 + counter % 2]
            size = (32 + 2 * (counter % 3), 40 + 4 * (counter % 2))
            image, mask = object_image_and_mask(counter, size, classes)
            save_jpeg(os.path.join(voc_dir, "JPEGImages", item_id + ".jpg"), image)
            save_palette_png(os.path.join(voc_dir, mask_folder, item_id + ".png"), mask)
            info["masks"][item_id] = mask
            info["labels"][item_id] = [0, *classes]
            info["images"][item_id] = os.path.join(voc_dir, "JPEGImages", item_id + ".jpg")
            ids.append(item_id)
            counter += 1
        stem = (split_file_names or {}).get(split, split)
        write_split_file(os.path.join(voc_dir, "ImageSets", "Segmentation", f"{stem}.txt"), ids)
        info["ids"][split] = ids
    if class_names:
        with open(os.path.join(voc_dir, "class_names.txt"), "w") as handle:
            handle.write("\n".join(names) + "\n")
    if cls_labels:
        table = {}
        for item_id, labels in info["labels"].items():
            vector = np.zeros(len(names) - 1, np.float32)
            vector[[label - 1 for label in labels if label > 0]] = 1.0
            table[item_id] = vector
        np.save(os.path.join(voc_dir, "cls_labels_onehot.npy"), table)
    return info


def write_split_file(path: str, ids) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("\n".join(ids) + "\n")


def write_coco_toco_tree(directory, *, num_train: int = 3, num_val: int = 2, jpeg_folder: bool = False) -> dict:
    """Writes the AFA/ToCo COCO layout: `{train2014,val2014}/*.jpg`, `SegmentationClass/...`, `train.txt`, `val.txt`.

    Uses the 81 COCO classes (class ids up to 80 appear in the masks). With `jpeg_folder=True` images go under
    `JPEGImages/{train2014,val2014}/` instead.
    """
    root = os.fspath(directory)
    info = {"root": root, "ids": {}, "masks": {}, "labels": {}}
    counter = 0
    for split, count in (("train", num_train), ("val", num_val)):
        ids = []
        for _ in range(count):
            item_id = f"COCO_{split}2014_{counter:012d}"
            classes = sorted({1 + (17 * counter) % 80, 80 if counter % 2 else 1 + counter})
            image, mask = object_image_and_mask(counter, (36, 44), classes)
            image_dir = (
                os.path.join(root, "JPEGImages", f"{split}2014") if jpeg_folder else os.path.join(root, f"{split}2014")
            )
            save_jpeg(os.path.join(image_dir, item_id + ".jpg"), image)
            save_palette_png(os.path.join(root, "SegmentationClass", f"{split}2014", item_id + ".png"), mask)
            info["masks"][item_id] = mask
            info["labels"][item_id] = [0, *classes]
            ids.append(item_id)
            counter += 1
        write_split_file(os.path.join(root, f"{split}.txt"), ids)
        info["ids"][split] = ids
    return info


# Category ids are deliberately not contiguous (as in COCO: 1..90 with gaps) and not sorted in the file.
INSTANCE_CATEGORIES = [
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
]


def write_coco_instances_tree(directory, *, split: str = "val") -> dict:
    """Writes `annotations/instances_<split>2014.json` and `<split>2014/*.jpg` with polygon and crowd-RLE objects.

    Images (id: size, objects):
        1: 48x64, a large person box with a small car box on top (the car must stay visible), and a toothbrush;
        2: 40x40, one crowd (RLE) car region only;
        3: 48x48, no annotation at all (background only);
        4: 20x30, a person (small image, for the `min_size` filter).

    Returns `{"root", "annotation_file", "class_names", "expected": {stem: {"labels", "points": {(y, x): class}}},
    "sizes": {stem: (h, w)}}`; contiguous classes: person 1, car 2, toothbrush 3 (sorted category ids 1, 3, 90).
    """
    from pycocotools import mask as mask_utils

    root = os.fspath(directory)
    folder = f"{split}2014"
    images, annotations = [], []

    def add_image(image_id, height, width):
        file_name = f"COCO_{folder}_{image_id:012d}.jpg"
        rng = np.random.default_rng(image_id)
        save_jpeg(os.path.join(root, folder, file_name), rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        return file_name

    def box(annotation_id, image_id, category, x0, y0, x1, y1):
        polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
        annotations.append(
            {
                "id": annotation_id,
                "image_id": image_id,
                "category_id": category,
                "iscrowd": 0,
                "segmentation": [polygon],
                "area": float((x1 - x0) * (y1 - y0)),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
        )

    add_image(1, 48, 64)
    box(10, 1, 1, 4, 4, 40, 44)  # person, large
    box(11, 1, 3, 10, 10, 20, 20)  # car, small, inside the person: painted on top
    box(12, 1, 90, 48, 30, 60, 44)  # toothbrush
    add_image(2, 40, 40)
    crowd = np.zeros((40, 40), np.uint8, order="F")
    crowd[5:25, 8:30] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations.append(
        {
            "id": 20,
            "image_id": 2,
            "category_id": 3,
            "iscrowd": 1,
            "segmentation": rle,
            "area": float(crowd.sum()),
            "bbox": [8, 5, 22, 20],
        }
    )
    add_image(3, 48, 48)
    add_image(4, 20, 30)
    box(40, 4, 1, 2, 2, 20, 15)
    annotation_file = os.path.join(root, "annotations", f"instances_{folder}.json")
    os.makedirs(os.path.dirname(annotation_file), exist_ok=True)
    with open(annotation_file, "w") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": INSTANCE_CATEGORIES}, handle)
    stem = lambda i: f"COCO_{folder}_{i:012d}"  # noqa: E731
    expected = {
        stem(1): {"labels": [0, 1, 2, 3], "points": {(30, 30): 1, (15, 15): 2, (37, 54): 3, (46, 2): 0}},
        stem(2): {"labels": [0, 2], "points": {(15, 20): 2, (35, 35): 0}},
        stem(3): {"labels": [0], "points": {(10, 10): 0}},
        stem(4): {"labels": [0, 1], "points": {(8, 10): 1}},
    }
    sizes = {stem(1): (48, 64), stem(2): (40, 40), stem(3): (48, 48), stem(4): (20, 30)}
    return {
        "root": root,
        "annotation_file": annotation_file,
        "class_names": ["background", "person", "car", "toothbrush"],
        "expected": expected,
        "sizes": sizes,
    }


TAGGED_ROWS = [
    ("cat_01.jpg", ["cat", "sofa"]),
    ("dog_01.jpg", ["dog"]),
    ("sub/mixed_01.png", ["cat", "dog"]),
    ("empty_01.jpg", []),
]


def write_tagged_tree(directory, *, tag_format: str = "csv", file_name: str | None = None) -> dict:
    """Writes a folder of images (one in a sub-folder, one PNG) and a tag file.

    Args:
        tag_format: `"csv"` (`file_name,tags` with `;`-separated tags), `"wide_csv"` (one 0/1 column per class),
            `"json"` (object file -> list), `"json_list"` (list of objects) or `"jsonl"`.

    Returns:
        `{"root", "tags", "class_names", "labels": {id: [...]}, "ids": [...]}` with classes sorted by name.
    """
    root = os.fspath(directory)
    for index, (name, _) in enumerate(TAGGED_ROWS):
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((24 + index, 30, 3), 40 * index, np.uint8)).save(path)
    class_names = ["background", "cat", "dog", "sofa"]
    extension = {"csv": "csv", "wide_csv": "csv", "json": "json", "json_list": "json", "jsonl": "jsonl"}[tag_format]
    tags = os.path.join(root, file_name or f"tags.{extension}")
    if tag_format == "csv":
        with open(tags, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "tags"])
            for name, row_tags in TAGGED_ROWS:
                writer.writerow([name, ";".join(row_tags)])
    elif tag_format == "wide_csv":
        with open(tags, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "cat", "dog", "sofa"])
            for name, row_tags in TAGGED_ROWS:
                writer.writerow([name, *(int(c in row_tags) for c in ("cat", "dog", "sofa"))])
    elif tag_format == "json":
        with open(tags, "w") as handle:
            json.dump({name: row_tags for name, row_tags in TAGGED_ROWS}, handle)
    elif tag_format == "json_list":
        with open(tags, "w") as handle:
            json.dump([{"file_name": name, "tags": row_tags} for name, row_tags in TAGGED_ROWS], handle)
    else:
        with open(tags, "w") as handle:
            for name, row_tags in TAGGED_ROWS:
                handle.write(json.dumps({"file_name": name, "labels": row_tags}) + "\n")
    labels = {
        os.path.splitext(name)[0]: sorted({0, *(class_names.index(t) for t in row_tags)})
        for name, row_tags in TAGGED_ROWS
    }
    return {"root": root, "tags": tags, "class_names": class_names, "labels": labels, "ids": list(labels)}
