"""What a `gpuaug.GPULoader` does per epoch, in numbers (``stats``) and words (``describe``)."""

from __future__ import annotations

from typing import Any

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import describe_backend
from gpuaug.loader.sampler import AUGMENT_STREAM, PERMUTATION_STREAM
from gpuaug.loader.stages.finish import KORNIA_STREAM

__all__ = ["describe_loader", "loader_stats"]


def loader_stats(loader: Any) -> dict[str, Any]:
    """The numbers behind `describe_loader`, as a dict (`gpuaug.GPULoader.stats`)."""
    s = loader.sampler
    n = len(loader.dataset)
    return {
        "root": str(loader.dataset.root),
        "num_samples": n,
        "num_classes": loader.dataset.num_classes,
        "class_counts": dict(loader.dataset.counts()),
        "subset": getattr(loader.dataset, "subset", None),
        "validation_split": getattr(loader.dataset, "validation_split", 0.0),
        "batch_size": s.batch_size,
        "shuffle": s.shuffle,
        "drop_last": s.drop_last,
        "seed": s.seed,
        "seed_given": s.seed_was_given,
        "epoch": s.epoch,
        "num_replicas": s.num_replicas,
        "rank": s.rank,
        "padding": s.samples_per_pass * s.num_replicas - n,
        "samples_per_pass": s.samples_per_pass,
        "steps_per_pass": s.steps_per_pass,
        "steps_per_epoch": s.steps_per_epoch,
        "passes_per_epoch": s.passes_in_epoch(),
        "samples_per_epoch": s.samples_in_epoch(s.epoch),
        "last_batch_size": s.last_batch_size,
        "dropped_per_pass": s.samples_per_pass - s.steps_per_pass * s.batch_size
        if s.drop_last
        else 0,
        "device": str(loader.device),
        "cache": loader.config.cache,
        "cache_bytes": loader.cache.nbytes if loader.cache is not None else 0,
        "decode": loader.config.decode,
        "layout": getattr(loader, "layout", "planar"),
        "num_workers": loader.num_workers if loader.cache is None else 0,
        "target_size": None
        if loader.dataset.target_size is None
        else tuple(loader.dataset.target_size),
        "max_side": getattr(loader.dataset, "max_side", None),
        "recipe": None if getattr(loader, "recipe", None) is None else type(loader.recipe).__name__,
        "channels": loader.dataset.channels,
        "class_mode": loader.dataset.class_mode,
    }


def _per_epoch(sampler: Any) -> str:
    sizes = {sampler.samples_in_epoch(e) for e in range(min(sampler.steps_per_pass, 1000))}
    return f"{min(sizes)}" if len(sizes) == 1 else f"{min(sizes)} to {max(sizes)}"


def _rerun(sampler: Any) -> str:
    if sampler.seed_was_given:
        return f"With the same seed ({sampler.seed}) a rerun gives the same batches"
    return f"The seed was drawn at random: seed={sampler.seed} gives these batches again"


def describe_loader(loader: Any, verbose: bool = False) -> str:
    """What one epoch of ``loader`` is (`gpuaug.GPULoader.describe`); ``verbose`` adds how
    each seed is derived (the generators and their seed mixing)."""
    st = loader_stats(loader)
    s = loader.sampler
    n, b = st["num_samples"], st["batch_size"]
    lines = [f"gpuaug.GPULoader over {st['root']}"]
    subset = ""
    if st["subset"] is not None:
        subset = f" (subset {st['subset']!r}, validation_split={st['validation_split']:g})"
    counts = ", ".join(f"{k}={v}" for k, v in st["class_counts"].items())
    lines.append(f"  Found {n} images belonging to {st['num_classes']} classes{subset}: {counts}")
    skipped = getattr(loader.dataset, "skipped", [])
    if skipped:
        lines.append(
            f"  {len(skipped)} unreadable file(s) left out when indexing (on_error='skip'; "
            "see dataset.skipped)"
        )
    if st["target_size"] is None:  # ragged batches (gpuaug.loader.stages.ragged)
        cap = st["max_side"]
        shape = "each at its own size" + (
            f", the long side capped at {cap} px (resized with "
            f"{loader.dataset.interpolation!r}"
            + (", JPEGs drafted" if loader.dataset.draft else "")
            + ")"
            if cap is not None
            else " (the file's)"
        )
        lines.append(
            f"  images: {shape}, {loader.dataset.color_mode} ({st['channels']} channels); "
            f"class_mode={st['class_mode']!r}"
        )
        travels = (
            "its JPEG files travel as they are and nvJPEG decodes them into one packed uint8 "
            "buffer and an (offset, H, W) table on the device (other files: packed by the "
            "workers)"
            if loader.config.decode == "gpu"
            else "a batch travels as one packed uint8 buffer and an (offset, H, W) table"
        )
        lines.append(
            f"  {travels}; on the device one gather and a zeroing of the padding make the "
            "zero-padded (B, C, Hmax, Wmax) batch and the recipe crops each image from its own "
            "pixels"
        )
    else:
        h, w = st["target_size"]
        if loader.dataset.color_mode == "array":  # gpuaug.data.arrays: the images as given
            size = "as given (nothing is resized)"
        else:
            size = f"resized with {loader.dataset.interpolation!r}"
        lines.append(
            f"  images: {h}x{w}, {loader.dataset.color_mode} ({st['channels']} channels), "
            f"{size}; class_mode={st['class_mode']!r}"
        )
    lines.append("Epoch:")
    shard = n
    if s.num_replicas > 1:
        shard = s.samples_per_pass
        pad = st["padding"]
        lines.append(
            f"  distributed: rank {s.rank} of {s.num_replicas}; each rank reads a disjoint "
            f"shard of {shard} images per pass"
            + (f" ({pad} image(s) repeated to make the shards equal)" if pad else "")
        )
    rule = f"floor({shard} / {b})" if s.drop_last else f"ceil({shard} / {b})"
    lines.append(
        f"  batch_size={b}, shuffle={s.shuffle}, drop_last={s.drop_last}: one pass = "
        f"{s.steps_per_pass} step{'s' if s.steps_per_pass != 1 else ''} = {rule}"
    )
    if s.drop_last:
        lines.append(
            f"  the last {st['dropped_per_pass']} image(s) of each pass's order are dropped "
            "(a different few each pass when shuffled)"
        )
    elif s.last_batch_size != b and s.steps_per_pass > 1:
        lines.append(f"  the last batch of each pass holds {s.last_batch_size} images (as Keras)")
    if loader.config.steps_per_epoch is None:
        lines.append(
            f"  steps per epoch: {s.steps_per_epoch} (one pass, the default); samples per "
            f"epoch: {st['samples_per_epoch']}"
            + (" (every image exactly once)" if not s.drop_last else "")
        )
    else:
        sizes = [s.samples_in_epoch(e) for e in range(min(s.steps_per_pass, 1000))]
        lo, hi = min(sizes), max(sizes)
        sp = f"{lo}" if lo == hi else f"{lo} to {hi} (depends on where the short batches fall)"
        lines.append(
            f"  steps per epoch: {s.steps_per_epoch} (steps_per_epoch) = "
            f"{st['passes_per_epoch']:.3g} passes; samples per epoch: {sp}"
        )
        lines.append(
            "  passes run on across epoch boundaries: within a pass no image is dropped or "
            "repeated; epoch e is steps [e * steps_per_epoch, (e + 1) * steps_per_epoch) "
            "of the endless stream of passes"
        )
    lines.append(f"  len(loader) = {len(loader)}; next epoch: {s.epoch}")
    lines.append(f"Augmentation (per sample, on {loader.device}):")
    recipe = getattr(loader, "recipe", None)
    if recipe is not None:  # in place of the Keras-style augmentation
        lines.append(f"  {type(recipe).__name__} (output {recipe.config.output_size}):")
        lines.extend("    " + line for line in recipe.describe().splitlines())
    else:
        lines.extend("  " + line for line in loader.augment.config.describe().splitlines())
    lines.extend("  " + line for line in getattr(loader, "augment_notes", ()))
    mix = getattr(loader, "mix", None)
    if mix is not None:  # GPULoader.mix: after the augmentation, soft targets
        lines.append(f"  then {type(mix).__name__}({mix.extra_repr()}): y = soft targets")
    aug = loader.augment
    if recipe is None:
        backend = describe_backend(
            aug.backend, loader.device, aug.dtype, aug.memory_format, aug.config
        )
        lines.append("  " + backend)
    ahead = getattr(loader, "compiling_ahead", None)
    if ahead is not None:
        if not ahead.done():
            state = "still compiling"
        elif ahead.exception() is not None:  # the first batch compiles, and raises, as before
            state = f"failed: {ahead.exception()!r}; the first batch compiles instead"
        else:
            state = "done"
        lines.append(
            "  kernels: compiled (or loaded from Triton's cache) on a background thread while "
            f"the first batch decodes ({state})"
        )
    lines.append("Randomness:")
    seed_note = "" if s.seed_was_given else ", drawn at random; pass seed= to fix it"
    per_epoch = st["samples_per_epoch"]
    if s.shuffle and loader.config.steps_per_epoch is None and not s.drop_last:
        order = f"Each epoch visits every image once in a new order (seed {s.seed}, epoch E)"
    elif s.shuffle:
        order = f"Each pass visits the images in a new order (seed {s.seed}, pass p)"
    else:
        order = f"Each pass visits the images in file order (seed {s.seed})"
    seed_text = f"seed {s.seed}{seed_note}"
    random = _is_random(loader.augment.config) or getattr(loader, "mix", None) is not None
    if recipe is not None:
        random = type(recipe).__name__ == "TrainRecipe"  # an EvalRecipe draws nothing
    if random:
        lines.append(
            f"  {order}; each visit draws fresh augmentation parameters and nothing is "
            f"stored: {_per_epoch(s)} augmented samples per epoch, "
            f"{sum(s.samples_in_epoch(e) for e in range(30)):,} different ones over 30 "
            f"epochs, for example. {_rerun(s)}, on a GPU as on the CPU; "
            "loader.replay(E, step) rebuilds any one."
        )
    else:
        lines.append(
            f"  {order}; no random augmentation: every visit of an image gives the same "
            f"pixels. {per_epoch} samples per epoch; {seed_text}."
        )
    if verbose:
        if random:
            lines.append(
                "  Each visit's parameters come from a CPU torch.Generator seeded by "
                "(seed, epoch, step, rank); nothing is stored. The draws are then copied to "
                f"{loader.device}, so they do not depend on the device: a seeded epoch gets "
                "the same parameters on a GPU as on the CPU."
            )
        lines.append(
            f"  Order of pass p: torch.randperm({n}) with a CPU generator seeded "
            f"mix_seed(seed, {PERMUTATION_STREAM:#x}, p); batch (E, step): CPU generator "
            f"seeded mix_seed({_augment_base(loader)}, {AUGMENT_STREAM:#x}, E, step, rank), "
            + (
                "torch.rand((B, 12)); row i's parameters: loader.replay(E, step).params.index(i)."
                if recipe is None
                else "the recipe's sample_params (sizes from the batch's table); "
                "loader.replay(E, step).params holds every step's per-image values."
            )
        )
    if aug.kornia is not None:
        lines.append(
            f"  kornia stages ({', '.join(aug.kornia.names)}): on the float32 [0, 1] batch "
            "after the Keras stage, before the normalisation; kornia draws from the global "
            "torch RNG, so each batch's draws run inside torch.random.fork_rng seeded "
            f"mix_seed(batch seed, {KORNIA_STREAM:#x}) (the training loop's RNG is left as "
            "it was); replay(E, step).kornia_params holds their parameters (kornia's _params)."
        )
    lines.append("Pipeline:")
    if loader.cache is not None:
        c = loader.cache
        where = c.path if c.kind == "disk" else c.device
        lines.append(
            f"  cache={c.kind!r}: {len(c)} images x {c.nbytes / max(len(c), 1) / 1e3:.1f} kB "
            f"= {c.nbytes / 1e6:.1f} MB uint8 at {where}, "
            + ("built by this process" if c.built else "read from disk (up to date)")
            + "; each epoch gathers from it (no worker processes)"
            + (
                ", into 3 reusable pinned buffers copied to the device one batch ahead"
                if c.kind != "device" and loader.device.type == "cuda"
                else ""
            )
        )
        if s.stick_to_shard:  # cache_per_rank
            lines.append(
                f"  cache_per_rank: the cache holds this rank's fixed share ({len(c)} of {n} "
                "images, its part of pass 0); every later pass shuffles within the share "
                f"(mix_seed(seed, {PERMUTATION_STREAM:#x}, p, rank)), so a sample is always "
                "seen by the same rank"
            )
    else:
        lines.append(
            f"  decode={loader.config.decode!r} in {loader.num_workers} worker process(es)"
            + (" (0: in the main process)" if not loader.num_workers else "")
            + f"; uint8 batches copied to {loader.device}"
            + (" on a side CUDA stream, one batch ahead" if loader.device.type == "cuda" else "")
        )
    layout = st["layout"]
    what = (
        "RGB + a padding byte per pixel, (B, H, W, 4) viewed as (B, 3, H, W)"
        if layout == "rgbx"
        else "(B, C, H, W) contiguous"
    )
    reason = getattr(loader, "layout_reason", "")
    lines.append(f"  uint8 batches {layout!r}: {what}" + (f"; {reason}" if reason else ""))
    if loader.dataset.on_error == "skip":
        lines.append(
            "  unreadable files (on_error='skip') "
            + (
                f"are replaced by other samples of their batch, so all {s.num_replicas} ranks "
                "run the same steps with the same batch shapes"
                if loader.skip_rule == "replace"
                else "leave their batch (image and label), so a batch can be shorter"
            )
            + "; listed in loader.last_skipped"
        )
    return "\n".join(lines)


def _augment_base(loader: Any) -> str:
    """What the batches' augmentation seed is mixed from: the loader's seed, or
    ``LoaderConfig.augment_seed`` when that is set."""
    base = getattr(loader.config, "augment_seed", None)
    return "seed" if base is None else f"augment_seed={base}"


def _is_random(config: AugmentConfig) -> bool:
    """Whether the config draws any random parameter."""
    return bool(
        config.has_geometry
        or config.horizontal_flip
        or config.vertical_flip
        or config.channel_shift_range
        or config.brightness_range is not None
        or config.kornia
    )
