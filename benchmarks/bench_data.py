#!/usr/bin/env python
"""The ImageNet data path at scale: start-up (indexing an image folder) and the training item rate, against
`datasets`' imagefolder and timm's own pipeline, in one run.

On an ImageNet-shaped folder (`train/<wnid>/*.JPEG`; generated with `--generate N` from scikit-learn's two sample
photos: random crops of 200-420 x 160-360 px, rescaled 0.9-1.4x, JPEG quality 90, so decoding costs what photos cost):

  A. start-up: `datasets.load_dataset("imagefolder")` with its Arrow cache warm, against the package's loader
     (`load_training_splits(dataset="imagefolder")`: the folder's index, `nasvit_hf.data.load_imagefolder`) cold (it
     builds the index) and warm, per 10,000 images and extrapolated to a million;
  B. training items on one core (one torch thread): `ImageClassificationDataset` with the reference recipe's timm
     transform (224 px random resized crop, bicubic, flip 0.5, rand-n1-m1-mstd0.5-inc1, random erasing 0.01 per
     pixel), seeded per image, against timm's `ImageDataset` + `create_transform` with the same settings, on the same
     images: interleaved rounds of `--items` random images, each timed in this process and through a DataLoader with
     one worker (the training setting); the median of the rounds' ratios timm / ours (> 1: ours is faster). A check
     runs timm's transform under our per-image seeds: identical tensors mean the same decoding and settings.

    python benchmarks/bench_data.py --generate 10000 --classes 1000 --rounds 15 --items 100
    python benchmarks/bench_data.py --data_dir /data/imagenet --rounds 15 --items 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_summary  # noqa: E402

REFERENCE_TRANSFORM = {
    "auto_augment": "rand-n1-m1-mstd0.5-inc1",
    "crop_scale": (0.08, 1.0),
    "hflip": 0.5,
    "random_erasing": 0.01,
    "random_erasing_mode": "pixel",
}


def generate_folder(root: Path, num_images: int, num_classes: int, seed: int = 0) -> Path:
    """`root/train/n<class>/n<class>_<i>.JPEG`: `num_images` photo crops in `num_classes` class folders."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(array) for array in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        wnid = f"n{index % num_classes:08d}"
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        photo = photos[int(rng.integers(len(photos)))]
        width, height = int(rng.integers(200, 420)), int(rng.integers(160, 360))
        left, top = int(rng.integers(0, photo.width - width)), int(rng.integers(0, photo.height - height))
        scale = float(rng.uniform(0.9, 1.4))
        crop = photo.crop((left, top, left + width, top + height))
        crop = crop.resize((int(width * scale), int(height * scale)), Image.BILINEAR)
        crop.save(folder / f"{wnid}_{index // num_classes}.JPEG", quality=90)
    return root


def time_start_up(data_dir: Path) -> dict[str, float]:
    """Seconds: datasets' imagefolder (its cache warm), the package's loader cold (building the index) and warm."""
    import datasets

    from nasvit_hf.training.data import load_training_splits

    datasets.load_dataset("imagefolder", data_dir=str(data_dir))  # datasets' own Arrow cache: warm from here on
    start = time.perf_counter()
    datasets.load_dataset("imagefolder", data_dir=str(data_dir))
    datasets_warm = time.perf_counter() - start
    start = time.perf_counter()
    load_training_splits("imagefolder", validation_split=None, data_dir=str(data_dir))
    cold = time.perf_counter() - start
    warm, holdout = [], []
    for _ in range(3):
        start = time.perf_counter()
        load_training_splits("imagefolder", validation_split=None, data_dir=str(data_dir))
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()  # the ImageNet recipe also carves 5 images per class out for search
        load_training_splits("imagefolder", validation_split=None, data_dir=str(data_dir), holdout_per_class=5)
        holdout.append(time.perf_counter() - start)
    return {
        "datasets_warm": datasets_warm,
        "index_cold": cold,
        "index_warm": statistics.median(warm),
        "index_warm_holdout": statistics.median(holdout),
    }


class _RoundSampler(torch.utils.data.Sampler):
    """Yields the indices of the current round (set between rounds; the workers stay up)."""

    def __init__(self):
        self.indices: list[int] = []

    def __iter__(self):
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


def _timm_collate(batch):
    return torch.stack([image for image, _ in batch]), torch.tensor([label for _, label in batch])


def build_pipelines(data_dir: Path, seed: int = 0):
    """(ours, timm's dataset, [(our row, timm's row)] of the same images)."""
    import datasets
    from timm.data import ImageDataset, create_transform

    from nasvit_hf.data.imagefolder import load_imagefolder
    from nasvit_hf.training.data import ImageClassificationDataset
    from nasvit_hf.training.timm_data import build_timm_train_transform

    split = load_imagefolder(data_dir).splits["train"]
    ours = ImageClassificationDataset(split, build_timm_train_transform(224, **REFERENCE_TRANSFORM), seed=seed)
    low, high = REFERENCE_TRANSFORM["crop_scale"]
    timm_transform = create_transform(
        224,
        is_training=True,
        scale=(low, high),
        hflip=REFERENCE_TRANSFORM["hflip"],
        auto_augment=REFERENCE_TRANSFORM["auto_augment"],
        interpolation="bicubic",
        re_prob=REFERENCE_TRANSFORM["random_erasing"],
        re_mode=REFERENCE_TRANSFORM["random_erasing_mode"],
        re_count=1,
    )
    timm_dataset = ImageDataset(str(data_dir / "train"), transform=timm_transform)
    paths = [row["image"]["path"] for row in split.cast_column("image", datasets.Image(decode=False))]
    timm_index = {os.path.realpath(path): index for index, (path, _) in enumerate(timm_dataset.reader.samples)}
    if len(timm_index) != len(paths):
        raise SystemExit(f"timm lists {len(timm_index)} images, the index {len(paths)}: not the same folder view")
    pairs = [(row, timm_index[os.path.realpath(path)]) for row, path in enumerate(paths)]
    return ours, timm_dataset, pairs


def check_same_outputs(ours, timm_dataset, pairs, count: int = 20) -> float:
    """Max |difference| between our items and timm's for the same images when timm's transform draws from the same
    per-image seeded RNGs: 0 means the same decoding and the same transform settings."""
    from nasvit_hf.training.data import seeded_rngs

    worst = 0.0
    for row, timm_row in pairs[:count]:
        with seeded_rngs(ours.item_seed(row)):
            image, _ = timm_dataset[timm_row]
        worst = max(worst, float((ours[row]["pixel_values"] - image).abs().max()))
    return worst


class _SeededTimm(torch.utils.data.Dataset):
    """timm's dataset with each image's transform under the RNGs our dataset seeds for that image (no restore, as in
    a worker): the same random decisions as ours, so a comparison measures the pipelines, not the draws."""

    def __init__(self, timm_dataset, ours, our_row_of: dict[int, int]):
        self.timm_dataset, self.ours, self.our_row_of = timm_dataset, ours, our_row_of

    def __len__(self) -> int:
        return len(self.timm_dataset)

    def __getitem__(self, timm_row: int):
        from nasvit_hf.training.data import seeded_rngs

        row = self.our_row_of[timm_row]
        with seeded_rngs(self.ours.item_seed(row), restore=False):
            return self.timm_dataset[timm_row]


class _CpuTimed(torch.utils.data.Dataset):
    """A dataset that adds the CPU time its items take (in whichever process loads them) to a shared counter: the
    worker's own work, which other jobs on a shared machine do not inflate as they do wall time."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.seconds = torch.zeros((), dtype=torch.float64).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        start = time.process_time()
        item = self.dataset[index]
        self.seconds += time.process_time() - start
        return item


def time_items(data_dir: Path, rounds: int, items: int, seed: int = 0) -> dict[str, float]:
    """Per-image wall time of timm's pipeline and the package's on the same images, interleaved rounds, in this
    process (`dataset[i]`; ours seeds each image and restores the global RNGs after; also CPU time) and through a
    `DataLoader` with one worker process (the training setting: ours seeds without restoring), batch 32. "natural":
    timm as it runs (its own random draws); "paired": timm under our per-image seeds (the same draws; timm then also
    pays the seeding, ~20 us per image)."""
    from nasvit_hf.training.data import collate_image_batch

    ours, timm_dataset, pairs = build_pipelines(data_dir, seed)
    seeded_timm = _SeededTimm(timm_dataset, ours, {timm_row: row for row, timm_row in pairs})
    pipelines = {"timm": timm_dataset, "timm_paired": seeded_timm, "ours": ours}
    samplers = {name: _RoundSampler() for name in pipelines}
    timed = {name: _CpuTimed(dataset) for name, dataset in pipelines.items()}
    loaders = {
        name: torch.utils.data.DataLoader(
            timed[name],
            batch_size=32,
            sampler=samplers[name],
            num_workers=1,
            persistent_workers=True,
            collate_fn=collate_image_batch if name == "ours" else _timm_collate,
        )  # fmt: skip
        for name in pipelines
    }
    rng = random.Random(seed)
    times: dict[str, list[float]] = {}
    for round_index in range(rounds + 1):  # round 0 warms up (file cache, lazy imports, worker start)
        chosen = rng.sample(pairs, items)
        names = list(pipelines)
        names = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in names:
            rows = [row if name == "ours" else timm_row for row, timm_row in chosen]
            start, start_cpu = time.perf_counter(), time.process_time()
            for row in rows:
                pipelines[name][row]
            main, main_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            samplers[name].indices = rows
            timed[name].seconds.zero_()
            start = time.perf_counter()
            for _ in loaders[name]:
                pass
            worker, worker_cpu = time.perf_counter() - start, float(timed[name].seconds)
            if round_index:
                measured = (("main", main), ("main_cpu", main_cpu), ("worker", worker), ("worker_cpu", worker_cpu))
                for key, value in measured:
                    times.setdefault(f"{name}_{key}", []).append(value / items)
    results = {key: statistics.median(values) for key, values in times.items()}
    for baseline in ("timm", "timm_paired"):
        for mode in ("main", "main_cpu", "worker", "worker_cpu"):
            ratios = [a / b for a, b in zip(times[f"{baseline}_{mode}"], times[f"ours_{mode}"])]
            results[f"ratio_{baseline}_{mode}"] = statistics.median(ratios)
    results["max_difference_same_seeds"] = check_same_outputs(ours, timm_dataset, pairs)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="an image folder with train/<class>/ images")
    parser.add_argument("--generate", type=int, default=10000, help="images to generate when --data_dir is not set")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--skip_start_up", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as temporary:
        # A fresh datasets cache (Arrow files and the package's index) for this run; set before datasets is imported.
        os.environ["HF_DATASETS_CACHE"] = str(Path(temporary) / "datasets_cache")
        data_dir = Path(args.data_dir) if args.data_dir else None
        if data_dir is None:
            start = time.perf_counter()
            data_dir = generate_folder(Path(temporary) / "imagenet", args.generate, args.classes)
            print(f"generated {args.generate} JPEGs in {args.classes} classes ({time.perf_counter() - start:.0f} s)")
        num_images = sum(1 for _ in (data_dir / "train").rglob("*.JPEG"))
        results: dict = {"machine": machine_summary(), "images": num_images, "load_average_start": load_average()}
        if not args.skip_start_up:
            start_up = time_start_up(data_dir)
            results["start_up"] = start_up
            per_million = {key: value * 1e6 / num_images / 60 for key, value in start_up.items()}
            print(
                f"start-up on {num_images} images: datasets imagefolder warm {start_up['datasets_warm']:.2f} s; "
                f"index cold {start_up['index_cold']:.2f} s, warm {start_up['index_warm']:.3f} s (per million images: "
                f"{per_million['datasets_warm']:.1f} / {per_million['index_cold']:.1f} / "
                f"{per_million['index_warm']:.2f} min; datasets warm / index warm = "
                f"{start_up['datasets_warm'] / start_up['index_warm']:.0f}x); warm with the 5-per-class holdout "
                f"{start_up['index_warm_holdout']:.3f} s (its extra cost grows with the held-out rows: 5,000 here as "
                "in ImageNet's 1,000 classes)"
            )
        items = time_items(data_dir, args.rounds, args.items)
        results["items"] = items
        results["load_average_end"] = load_average()
        print(
            f"training items, one core, {args.rounds} interleaved rounds of {args.items} images, per image (ms): "
            f"in this process timm {1e3 * items['timm_main']:.2f} / timm paired {1e3 * items['timm_paired_main']:.2f}"
            f" / ours {1e3 * items['ours_main']:.2f} (CPU {1e3 * items['timm_main_cpu']:.2f} / "
            f"{1e3 * items['timm_paired_main_cpu']:.2f} / {1e3 * items['ours_main_cpu']:.2f}); one DataLoader worker "
            f"{1e3 * items['timm_worker']:.2f} / {1e3 * items['timm_paired_worker']:.2f} / "
            f"{1e3 * items['ours_worker']:.2f} (the worker's CPU per item {1e3 * items['timm_worker_cpu']:.2f} / "
            f"{1e3 * items['timm_paired_worker_cpu']:.2f} / {1e3 * items['ours_worker_cpu']:.2f})"
        )
        for baseline in ("timm", "timm_paired"):
            print(
                f"  {baseline} / ours (median of the rounds' ratios; > 1: ours is faster): in this process "
                f"{items[f'ratio_{baseline}_main']:.3f} (CPU {items[f'ratio_{baseline}_main_cpu']:.3f}), through a "
                f"worker {items[f'ratio_{baseline}_worker']:.3f} (its CPU {items[f'ratio_{baseline}_worker_cpu']:.3f})"
            )
        print(
            f"same seeds, same images: max |ours - timm| = {items['max_difference_same_seeds']:.1e}; load "
            f"{results['load_average_start']} -> {results['load_average_end']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
