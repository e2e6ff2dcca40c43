"""The ImageNet recipe end to end (JPEG files -> augmented batch + targets on the device).

Usage (from the repository root)::

    python -m benchmarks.recipe --images 512 --batch-size 64 --workers 4 --device cuda
    python -m benchmarks.recipe --folder /data/imagenet-sample --out /tmp/recipe.json

Every pipeline reads the same folder (`benchmarks.data.make_image_folder`: photo-like JPEGs,
longer side 300..500 px) with the same number of worker processes and batch size, and hands out
a normalised float32 batch and its targets on ``--device``:

- ``gpuaug``: `gpuaug.flow_from_directory(target_size=None, max_side=--max-side, recipe=...)`,
  the loader's own recipe mode: workers decode each image at its own size (capped at
  ``--max-side``), the batch travels packed, and the loader runs
  `gpuaug.augment.recipe.TrainRecipe` on the device, per image: RandomResizedCrop (from the
  decoded image, as torchvision) + flip, TrivialAugmentWide, normalise, RandomErasing (0.25,
  pixel), MixUp 0.8 / CutMix 1.0 ("elem"), label smoothing 0.1.
- ``gpuaug-resized``: the same `TrainRecipe` called by hand on batches the workers resized to
  ``--load-size`` x ``--load-size`` first (a fixed-size loader; the crop is taken from the
  resized image).
- ``torchvision-v2``: ``ImageFolder`` + ``v2.Compose(RandomResizedCrop(antialias=True),
  RandomHorizontalFlip, TrivialAugmentWide, ToImage, ToDtype, Normalize,
  RandomErasing(0.25, value="random"))`` in DataLoader workers (pinned), ``.to(device)``, then
  ``v2.RandomChoice([MixUp(alpha=0.8), CutMix(alpha=1.0)])`` on the batch (one lambda per batch).
- ``timm``: ``timm.data.create_loader(is_training=True, auto_augment="rand-m9-mstd0.5",
  re_prob=0.25, re_mode="pixel")`` with its ``PrefetchLoader`` (normalise + erasing on the
  device) + ``timm.data.Mixup(0.8, 1.0, label_smoothing=0.1)`` ("batch"). timm has no
  TrivialAugmentWide: its RandAugment stands in (a different op policy; not ``-inc1``, whose
  posterize can ask Pillow >= 11 for 0 bits and fail).
- ``dali-cpu``: NVIDIA DALI's CPU pipeline, ``readers.file`` -> ``decoders.image`` ->
  ``random_resized_crop`` -> ``crop_mirror_normalize(mirror=coin_flip)`` (no TrivialAugment,
  erasing or mixing: DALI has none), when ``nvidia.dali`` is installed.

Timing as `benchmarks.bench.time_runner` (warm-up, then ``--repeats`` runs of ``--steps``
batches); the report gives images/s and each pipeline's ratio to gpuaug, from one run.

``--threads N`` sets torch's intra-op threads of the main process (``torch.set_num_threads``)
for every pipeline; without it torch's default stays. It matters on the CPU: the main process
shares the cores with the decode workers, and gpuaug's recipe runs there (the other pipelines
run their transforms in the workers, which DataLoader gives one thread each). The settings
record the thread count used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from . import pipelines as P
from .bench import default_results_dir, time_runner
from .data import make_image_folder

__all__ = ["PIPELINES", "main", "run"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _forever(loader) -> Iterator:
    while True:
        yield from loader


def _recipe_config(args, num_classes: int):
    from gpuaug.augment.recipe import RecipeConfig

    return RecipeConfig(
        size=args.size, re_prob=0.25, re_mode="pixel", mixup_alpha=0.8, cutmix_alpha=1.0,
        mixup_mode="elem", num_classes=num_classes,
    )  # fmt: skip


@contextlib.contextmanager
def gpuaug_ragged(folder: Path, args) -> Iterator[P.Runner]:
    import gpuaug
    from gpuaug.data.directory import find_classes

    classes, _ = find_classes(folder)  # as the loader finds them (hidden folders left out)
    loader = gpuaug.flow_from_directory(
        folder, target_size=None, max_side=getattr(args, "max_side", 512),
        recipe=_recipe_config(args, len(classes)), class_mode="sparse", batch_size=args.batch_size,
        seed=0, device=args.device, num_workers=args.workers, progress=False,
    )  # fmt: skip
    batches = _forever(loader)

    def one() -> int:
        images, _soft = next(batches)
        return images.shape[0]

    try:
        yield P.Runner(one, warmup_batches=max(2, args.workers), batches_per_round=1)
    finally:
        loader.close()


@contextlib.contextmanager
def gpuaug_recipe(folder: Path, args) -> Iterator[P.Runner]:
    import gpuaug
    from gpuaug.augment.recipe import TrainRecipe

    loader = gpuaug.flow_from_directory(
        folder, target_size=(args.load_size, args.load_size), class_mode="sparse",
        batch_size=args.batch_size, seed=0, device=args.device, num_workers=args.workers,
        progress=False,
    )  # fmt: skip
    recipe = TrainRecipe(_recipe_config(args, loader.dataset.num_classes))
    batches = _forever(loader)
    step = iter(range(10**9))

    def one() -> int:
        images, labels = next(batches)
        x, _ = recipe(images, labels, seed=next(step))
        return x.shape[0]

    try:
        yield P.Runner(one, warmup_batches=max(2, args.workers), batches_per_round=1)
    finally:
        loader.close()


def _unavailable_timm(_args) -> str | None:
    try:
        import timm.data  # noqa: F401
    except ImportError:
        return "timm is not installed (pip install timm)"
    return None


def _unavailable_dali(_args) -> str | None:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return 'nvidia-dali is not installed (pip install "gpuaug[dali]")'
    return None


@contextlib.contextmanager
def torchvision_v2(folder: Path, args) -> Iterator[P.Runner]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomResizedCrop(args.size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.TrivialAugmentWide(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
            v2.RandomErasing(0.25, value="random"),
        ]
    )
    dataset = ImageFolder(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        pin_memory=torch.device(args.device).type == "cuda", drop_last=True,
        persistent_workers=args.workers > 0,
    )  # fmt: skip
    mix = v2.RandomChoice([v2.MixUp(alpha=0.8, num_classes=2), v2.CutMix(alpha=1.0, num_classes=2)])
    batches = _forever(loader)
    device = torch.device(args.device)

    def one() -> int:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x, _ = mix(x, y)
        return x.shape[0]

    yield P.Runner(one, warmup_batches=max(2, args.workers), batches_per_round=max(1, args.workers))


@contextlib.contextmanager
def timm_loader(folder: Path, args) -> Iterator[P.Runner]:
    from timm.data import ImageDataset, Mixup, create_loader

    dataset = ImageDataset(str(folder))
    loader = create_loader(
        dataset, input_size=(3, args.size, args.size), batch_size=args.batch_size,
        is_training=True, auto_augment="rand-m9-mstd0.5", re_prob=0.25, re_mode="pixel",
        num_workers=args.workers, device=torch.device(args.device), use_prefetcher=True,
        persistent_workers=args.workers > 0, pin_memory=torch.device(args.device).type == "cuda",
    )  # fmt: skip
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=2)
    batches = _forever(loader)

    def one() -> int:
        x, y = next(batches)
        if x.shape[0] % 2 == 0:  # timm's Mixup wants an even batch
            x, _ = mix(x, y)
        return x.shape[0]

    yield P.Runner(one, warmup_batches=max(2, args.workers), batches_per_round=max(1, args.workers))


@contextlib.contextmanager
def dali_cpu(folder: Path, args) -> Iterator[P.Runner]:  # pragma: no cover - needs DALI
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    @pipeline_def(batch_size=args.batch_size, num_threads=max(1, args.workers), device_id=None)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=str(folder), random_shuffle=True, name="r")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        images = fn.random_resized_crop(images, size=(args.size, args.size))
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW",
            mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD],
            mirror=fn.random.coin_flip(),
        )  # fmt: skip
        return images, labels

    p = pipe()
    p.build()
    it = DALIGenericIterator([p], ["x", "y"], reader_name="r", auto_reset=True)
    device = torch.device(args.device)
    batches = _forever(it)

    def one() -> int:
        out = next(batches)[0]
        return out["x"].to(device, non_blocking=True).shape[0]

    yield P.Runner(one, warmup_batches=2)


#: name -> (factory, unavailable(args) -> reason or None, what it runs)
PIPELINES = {
    "gpuaug": (
        gpuaug_ragged,
        lambda a: None,
        "the loader's recipe mode: own sizes, RRC+flip+TA+normalise+RE+MixUp/CutMix per image",
    ),
    "gpuaug-resized": (
        gpuaug_recipe,
        lambda a: None,
        "the same steps on batches resized to --load-size first",
    ),
    "torchvision-v2": (
        torchvision_v2,
        lambda a: None,
        "same steps in workers; MixUp/CutMix per batch",
    ),
    "timm": (timm_loader, _unavailable_timm, "RandAugment in place of TA; prefetcher RE; Mixup"),
    "dali-cpu": (dali_cpu, _unavailable_dali, "RRC+flip+normalise only"),
}


def run(args) -> dict:
    """Time each pipeline; returns the results (images/s and ratios to gpuaug)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"`--threads` must be >= 1; got {threads}")
        torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        folder = Path(args.folder) if args.folder else None
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "photos"
            make_image_folder(folder, args.images, progress=False)
        results: dict = {
            "settings": {
                k: getattr(args, k, None)
                for k in (
                    "images",
                    "batch_size",
                    "workers",
                    "size",
                    "load_size",
                    "max_side",
                    "steps",
                    "repeats",
                    "device",
                )
            }
            | {"threads": torch.get_num_threads()},  # fmt: skip
            "torch": torch.__version__,
            "pipelines": {},
        }
        names = args.pipelines.split(",") if args.pipelines else list(PIPELINES)
        for name in names:
            factory, unavailable, notes = PIPELINES[name]
            reason = unavailable(args)
            if reason:
                results["pipelines"][name] = {"skipped": reason, "notes": notes}
                continue
            with factory(folder, args) as runner:
                timing = time_runner(
                    runner, steps=args.steps, repeats=args.repeats, device=torch.device(args.device)
                )
            results["pipelines"][name] = {"notes": notes, **timing}
        base = results["pipelines"].get("gpuaug", {}).get("median")
        for entry in results["pipelines"].values():
            if base and "median" in entry:
                entry["ratio_to_gpuaug"] = round(entry["median"] / base, 3)
    return results


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"Recipe end to end: {s['images']} JPEGs, batch {s['batch_size']}, {s['workers']} "
        f"workers, output {s['size']} px, device {s['device']}, torch {results['torch']}"
        + (f", main-process intra-op threads {s['threads']}" if "threads" in s else ""),
        "",
        "| pipeline | images/s (median) | / gpuaug | runs |",
        "|---|---|---|---|",
    ]
    for name, e in results["pipelines"].items():
        if "skipped" in e:
            lines.append(f"| {name} | skipped: {e['skipped']} | | {e['notes']} |")
        else:
            lines.append(
                f"| {name} | {e['median']:.1f} | {e.get('ratio_to_gpuaug', '')} | {e['notes']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.recipe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--folder", help="a folder of class sub-folders (default: write one)")
    parser.add_argument("--images", type=int, default=256, help="images to write (no --folder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="output side")
    parser.add_argument(
        "--load-size", type=int, default=288, help="gpuaug-resized's decode size (square)"
    )
    parser.add_argument(
        "--max-side", type=int, default=512, help="gpuaug's cap on an image's long side"
    )
    parser.add_argument(
        "--steps", type=int, default=16, help="timed batches (>> the prefetch queue)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pipelines", default="", help="comma-separated subset")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads of the main process"
    )
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/recipe-<device>)")
    args = parser.parse_args(argv)
    results = run(args)
    out = Path(args.out) if args.out else default_results_dir() / f"recipe-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    sys.stdout.write(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
