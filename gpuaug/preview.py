"""Augmented-sample preview: a PNG grid of source images and fresh random augmentations.

Each row of the grid is one source image from a class folder: the first column is the
image as the loader decodes it (resized, no augmentation), the other columns are fresh
augmentations drawn by :class:`gpuaug.GPUAugment` from a seeded ``torch.Generator``, each
captioned with the parameters that were sampled for it (rotation, shifts, shear, zoom,
flips, plus brightness and channel shift when the config uses them).

Rendering uses PIL only (no matplotlib), so the same seed, config, folder and device give a
byte-identical PNG. Normalisation steps (``rescale``, centring, std normalisation, ZCA,
``preprocessing_function``) are left out of the picture: they change the value range, not
the geometry, and would make the tiles unviewable.

Example:
    >>> from gpuaug.preview import make_preview
    >>> img = make_preview("data/train", "chollet_cats_dogs", n=16, rows=4, seed=0)
    >>> img.save("grid.png")

`make_recipe_preview` shows a training recipe (`gpuaug.augment.recipe.TrainRecipe`) instead:
all its tiles are one batch, so MixUp / CutMix partners are other tiles, and each tile is
captioned with its own draws (crop box and flip, op and magnitude, erased boxes, partner and
lambda); the normalisation is undone for display.

Why one module (over 600 lines): the image, mask, box and recipe previews share the layout,
the source picking and the captioned canvas; each preview function is what differs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gpuaug.augment.auto_augment import OPS
from gpuaug.augment.config import AugmentConfig, load_config
from gpuaug.augment.module import AugmentParams, GPUAugment
from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.image import ImageLoadError
from gpuaug.loader.stages.ragged import pack_images, unpack

__all__ = [
    "GridLayout",
    "caption_lines",
    "draw_boxes",
    "grid_layout",
    "make_detection_preview",
    "make_paired_preview",
    "make_preview",
    "make_recipe_preview",
    "overlay_mask",
    "recipe_caption_lines",
]

MIN_TILE = 128
"""Tiles narrower than this many pixels are upscaled (nearest, integer factor) so captions fit."""

MAX_TILES = 1024
"""Most augmented tiles one preview draws (``n``): a grid is for looking at."""

MAX_PIXELS = 50_000_000
"""Most pixels of the whole picture (150 MB of RGB): a bound on memory, whatever the layout."""

PAD = 6
FONT_SIZE = 12
LINE_HEIGHT = 15
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)

# Settings that change the value range rather than the geometry: not shown in the preview.
_NORMALISATION_OFF = {
    "rescale": None,
    "preprocessing_function": None,
    "featurewise_center": False,
    "samplewise_center": False,
    "featurewise_std_normalization": False,
    "samplewise_std_normalization": False,
    "zca_whitening": False,
}


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a preview grid.

    Attributes:
        rows: Number of source images (one per row).
        per_row: Augmented tiles per row (the original adds one more column).
        scale: Integer upscale factor applied to each tile.
        tile_width: Tile width in pixels after upscaling.
        tile_height: Tile height in pixels after upscaling.
        caption_lines: Caption lines under every tile.
        header_height: Height of the title band at the top.
    """

    rows: int
    per_row: int
    scale: int
    tile_width: int
    tile_height: int
    caption_lines: int
    header_height: int = 2 * LINE_HEIGHT + PAD

    @property
    def columns(self) -> int:
        return self.per_row + 1

    @property
    def cell_width(self) -> int:
        return self.tile_width + PAD

    @property
    def cell_height(self) -> int:
        return self.tile_height + self.caption_lines * LINE_HEIGHT + 2 * PAD

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole picture, PIL order."""
        width = PAD + self.columns * self.cell_width
        height = self.header_height + self.rows * self.cell_height + PAD
        return width, height


def grid_layout(
    n: int, rows: int, target_size: tuple[int, int], config: AugmentConfig | None = None
) -> GridLayout:
    """The layout :func:`make_preview` uses for ``rows`` source images and ``n`` augmentations.

    Args:
        n: Augmented tiles in the whole grid; each row gets ``ceil(n / rows)``.
        rows: Source images, one per row (fewer if the folder holds fewer readable images).
        target_size: (height, width) every image is resized to.
        config: The augmentation config; brightness/channel shift add a caption line.

    Returns:
        The :class:`GridLayout`.

    Raises:
        ValueError: if ``n``, ``rows`` or ``target_size`` is not positive, ``n`` is more than
            :data:`MAX_TILES`, or the picture would have more than
            :data:`MAX_PIXELS` pixels.
    """
    _check_positive_int("n", n)
    _check_positive_int("rows", rows)
    if n > MAX_TILES:
        raise ValueError(
            f"`n` must be at most {MAX_TILES} augmented tiles for a preview grid; got {n}"
        )
    height, width = _check_target_size(target_size)
    scale = max(1, math.ceil(MIN_TILE / width))
    lines = 5 + (1 if config is not None and _has_extras(config) else 0)
    lines += 1 if config is not None and config.kornia else 0
    layout = GridLayout(
        rows=rows,
        per_row=math.ceil(n / rows),
        scale=scale,
        tile_width=width * scale,
        tile_height=height * scale,
        caption_lines=lines,
    )
    w, h = layout.size
    if w * h > MAX_PIXELS:
        raise ValueError(
            f"the preview grid would be {w} x {h} = {w * h / 1e6:.0f} megapixels, more than "
            f"{MAX_PIXELS / 1e6:.0f}: use fewer tiles per row (n={n} over rows={rows} gives "
            f"{layout.per_row}), more rows, or a smaller `target_size` ({height}x{width})"
        )
    return layout


def caption_lines(params: AugmentParams, i: int, *, extras: bool = False) -> list[str]:
    """The caption of sample ``i``: its sampled transform in words, one short line each.

    Args:
        params: Parameters from :func:`gpuaug.sample_params` (any device).
        i: Row of ``params`` to describe.
        extras: Also describe brightness and channel shift (on one extra line).

    Returns:
        Lines such as ``["rotate -12.3°", "shift x +4.0, y -2.5", "shear +3.1°",
        "zoom x 0.93, y 1.07", "flip h"]``. Shifts are in pixels of the target size
        (x = columns, y = rows); zoom is Keras' factor (> 1 shows a smaller object).
    """
    angle = float(params.angle_deg[i])
    tx, ty = (float(v) for v in params.shift_px[i])
    shear = float(params.shear_deg[i])
    zx, zy = (float(v) for v in params.zoom[i])
    flips = [name for name, on in (("h", params.flip_h[i]), ("v", params.flip_v[i])) if bool(on)]
    lines = [
        f"rotate {angle:+.1f}\N{DEGREE SIGN}",
        f"shift x {tx:+.1f}, y {ty:+.1f}",
        f"shear {shear:+.1f}\N{DEGREE SIGN}",
        f"zoom x {zx:.2f}, y {zy:.2f}",
        "flip " + (", ".join(flips) if flips else "none"),
    ]
    if extras:
        bright = float(params.brightness[i])
        shift = float(params.channel_shift[i])
        lines.append(f"bright {bright:.2f}, ch {shift:+.1f}")
    return lines


def make_preview(
    directory: str | Path | DirectoryDataset,
    config: AugmentConfig | str | Path,
    *,
    n: int = 16,
    rows: int = 4,
    seed: int = 0,
    target_size: tuple[int, int] = (150, 150),
    color_mode: str = "rgb",
    interpolation: str = "nearest",
    device: str | torch.device = "cpu",
    title: str | None = None,
) -> Image.Image:
    """Render a grid of source images and their random augmentations.

    Source images are picked with the seed, taking the classes in turn (one image from
    each class, then a second from each, ...), so a two-class folder shows both classes.
    Files that cannot be read are skipped. For every row the parameters of all its tiles
    are drawn in one batched ``sample_params`` call and applied in one batched warp.

    Args:
        directory: Folder with one subfolder per class (as for ``flow_from_directory``), or
            a `DirectoryDataset` (its subset, classes, size, colour mode and interpolation
            are used; ``target_size``, ``color_mode`` and ``interpolation`` are then ignored).
        config: An :class:`AugmentConfig`, a preset name (``"chollet_cats_dogs"``) or a
            YAML path. Normalisation settings are ignored (see the module docstring).
        n: Augmented tiles in the grid; each row gets ``ceil(n / rows)``.
        rows: Source images, one per row.
        seed: Seeds both the choice of source images and the augmentation draws. The same
            seed (and device) gives the same picture.
        target_size: (height, width) images are resized to before augmenting, as the
            loader would.
        color_mode: ``"rgb"``, ``"rgba"`` or ``"grayscale"``; shown as RGB.
        interpolation: Resize interpolation (Keras names), as for the loader.
        device: Where the augmentation runs. CPU and CUDA draw different random numbers,
            so keep the device fixed to reproduce a picture.
        title: Header text; defaults to the config's name and the seed.

    Returns:
        An RGB ``PIL.Image`` of size ``grid_layout(n, rows, target_size, config).size``
        (fewer rows if the folder holds fewer readable images than ``rows``).

    Raises:
        ValueError: for a non-positive ``n``, ``rows`` or ``target_size``, an invalid
            config, or a folder without any readable image.
        FileNotFoundError: if ``directory`` or the config file does not exist.

    Shape:
        Tiles: each source (C, H, W) uint8 is repeated to (K, C, H, W), augmented on
        ``device`` as float32, then clamped to uint8 and drawn at ``scale`` x size.
    """
    config_name = str(config) if not isinstance(config, AugmentConfig) else "custom config"
    if not isinstance(config, AugmentConfig):
        config = load_config(config)
    if isinstance(directory, DirectoryDataset):
        if directory.target_size is None:
            raise ValueError("the dataset to preview needs a `target_size`; got None")
        target_size = directory.target_size
    layout = grid_layout(n, rows, target_size, config)
    if isinstance(directory, DirectoryDataset):
        dataset, directory = directory, directory.root
    else:
        dataset = DirectoryDataset(
            directory,
            target_size=(int(target_size[0]), int(target_size[1])),
            color_mode=color_mode,
            class_mode=None,
            interpolation=interpolation,
            on_error="skip",
        )
    sources = _pick_sources(dataset, layout.rows, torch.Generator().manual_seed(seed), directory)
    layout = dataclasses.replace(layout, rows=len(sources))

    device = torch.device(device)
    augment, generator = _preview_augment(config, device, seed)
    extras = _has_extras(config)
    canvas, draw, font = _start_canvas(
        layout,
        title or f"gpuaug preview: {config_name}  seed={seed}",
        f"first column: original ({target_size[0]}x{target_size[1]}); "
        f"then {layout.per_row} augmentations each; normalisation not shown",
    )

    for row, (path, label, image) in enumerate(sources):
        batch = image.unsqueeze(0).expand(layout.per_row, -1, -1, -1).contiguous().to(device)
        with torch.no_grad():
            params = augment.sample_params(batch, generator=generator)
            out, kornia = _augment_tiles(augment, batch, params, generator)
        tiles = _to_uint8(out)
        y = layout.header_height + row * layout.cell_height
        original = ["original", label, Path(path).name]
        _draw_cell(draw, canvas, layout, font, 0, y, image, original)
        for k in range(layout.per_row):
            lines = caption_lines(params, k, extras=extras) + _kornia_line(kornia, k)
            _draw_cell(draw, canvas, layout, font, k + 1, y, tiles[k], lines)
    return canvas


def _preview_augment(
    config: AugmentConfig, device: torch.device, seed: int
) -> tuple[GPUAugment, torch.Generator]:
    """The previews' augmenter (normalisation off, so tiles stay viewable) and generator."""
    augment = GPUAugment(dataclasses.replace(config, **_NORMALISATION_OFF))  # type: ignore[arg-type]
    augment = augment.to(device)
    return augment, torch.Generator(device=device).manual_seed(seed)


def _augment_tiles(
    augment: GPUAugment, batch: torch.Tensor, params: AugmentParams, generator: torch.Generator
) -> tuple[torch.Tensor, list[list[str]] | None]:
    """The tiles with ``params``; with kornia stages, those too (seeded from ``generator``)
    and, per tile, the kornia ops that ran on it."""
    if augment.kornia is None:
        return augment.apply(batch, params), None
    from gpuaug.augment.kornia_stages import applied_ops

    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    out = augment(batch, params=params, kornia_seed=seed)
    return out, applied_ops(augment.last_kornia_params, batch.shape[0])


def _kornia_line(kornia: list[list[str]] | None, i: int) -> list[str]:
    """The caption line naming the kornia ops applied to tile ``i`` (none without stages)."""
    if kornia is None:
        return []
    return ["kornia: " + (", ".join(kornia[i]) if kornia[i] else "none")]


def _start_canvas(layout: GridLayout, header: str, subtitle: str):
    """A blank grid canvas with the previews' two header lines: ``(canvas, draw, font)``."""
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(FONT_SIZE)
    draw.text((PAD, PAD // 2), header, fill=TEXT, font=font)
    draw.text((PAD, PAD // 2 + LINE_HEIGHT), subtitle, fill=MUTED, font=font)
    return canvas, draw, font


def _pick_sources(
    dataset: DirectoryDataset, rows: int, generator: torch.Generator, directory: Any
) -> list[tuple[str, str, torch.Tensor]]:
    """Up to ``rows`` readable (path, class name, uint8 image), classes taken in turn.

    Raises:
        ValueError: no image of ``directory`` decodes (naming the first files skipped).
    """
    per_class: dict[int, list[int]] = {}
    for index, (_, target) in enumerate(dataset.samples):
        per_class.setdefault(target, []).append(index)
    queues = []
    for target in sorted(per_class):
        indices = per_class[target]
        order = torch.randperm(len(indices), generator=generator).tolist()
        queues.append([indices[j] for j in order])
    picked: list[tuple[str, str, torch.Tensor]] = []
    failures: list[tuple[str, str]] = []
    while len(picked) < rows and any(queues):
        for queue in queues:
            if not queue or len(picked) >= rows:
                continue
            index = queue.pop(0)
            path, target = dataset.samples[index]
            try:
                image = dataset.load(index)
            except ImageLoadError as err:
                failures.append((path, err.reason or str(err)))
                continue
            picked.append((path, dataset.classes[target], image))
    if not picked:
        failed = [*dataset.skipped, *failures]
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in failed[:3])
        raise ValueError(
            f"no readable image in {str(directory)!r} to preview"
            + (f" (skipped: {reasons})" if reasons else "")
        )
    return picked


def _draw_cell(
    draw: ImageDraw.ImageDraw,
    canvas: Image.Image,
    layout: GridLayout,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    column: int,
    y: int,
    tile: torch.Tensor,
    lines: list[str],
) -> None:
    x = PAD + column * layout.cell_width
    picture = _tensor_to_pil(tile)
    if layout.scale > 1:
        picture = picture.resize((layout.tile_width, layout.tile_height), Image.Resampling.NEAREST)
    canvas.paste(picture, (x, y + PAD))
    text_y = y + PAD + layout.tile_height + 2
    for line in lines:
        draw.text((x, text_y), _fit(line, font, layout.tile_width), fill=TEXT, font=font)
        text_y += LINE_HEIGHT


def _tensor_to_pil(tile: torch.Tensor) -> Image.Image:
    """uint8 (C, H, W) with C in {1, 3, 4} -> RGB PIL image (alpha composited on white)."""
    array = tile.detach().cpu().permute(1, 2, 0).numpy()
    channels = array.shape[2]
    if channels == 1:
        return Image.fromarray(array[:, :, 0], mode="L").convert("RGB")
    if channels == 4:
        rgba = Image.fromarray(array, mode="RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return Image.fromarray(array[:, :, :3], mode="RGB")


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Augmented float images on the 0..255 scale -> uint8 on the CPU."""
    return images.detach().float().round().clamp(0, 255).to(torch.uint8).cpu()


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """Shorten ``text`` with an ellipsis so it is at most ``width`` pixels long."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font.
        return ImageFont.load_default()


def _has_extras(config: AugmentConfig) -> bool:
    return bool(config.brightness_range) or bool(config.channel_shift_range)


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1; got {value}")


def _check_target_size(target_size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in target_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"`target_size` must be a pair (height, width); got {target_size!r}"
        ) from None
    if height < 1 or width < 1:
        raise ValueError(f"`target_size` must be positive; got {tuple(target_size)}")
    return height, width


# ----------------------------------------------------------------------------- masks

#: Overlay colours of labels 1, 2, ... (cycled); label 0, the background, is left uncoloured.
MASK_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (255, 225, 25),
    (0, 128, 128),
)
IGNORE_COLOR = (128, 128, 128)


def overlay_mask(
    image: torch.Tensor,
    mask: torch.Tensor,
    *,
    alpha: float = 0.5,
    ignore: int | None = None,
) -> torch.Tensor:
    """An image with its label map drawn over it: label k > 0 tinted with ``MASK_COLORS``.

    Label 0 (the background) is left as it is; ``ignore`` (e.g. the loader's ``mask_fill`` 255)
    is tinted grey; every other label ``k`` with colour ``MASK_COLORS[(k - 1) % 10]``.

    Args:
        image: The image (1, 3 or 4 channels; shown as RGB, alpha dropped).
        mask: Its labels.
        alpha: Opacity of the colours, in [0, 1].
        ignore: A label drawn grey, or None.

    Shape:
        image (C, H, W) uint8, mask (H, W) or (1, H, W) integer, any device
        -> (3, H, W) uint8, CPU.

    Raises:
        ValueError: ``alpha`` outside [0, 1], or image and mask of different sizes.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]; got {alpha!r}")
    image, mask = image.detach().cpu(), mask.detach().cpu().long()
    if mask.ndim == 3:
        mask = mask[0]
    if tuple(mask.shape) != tuple(image.shape[-2:]):
        raise ValueError(
            f"`mask` {tuple(mask.shape)} and `image` {tuple(image.shape[-2:])} differ in size"
        )
    rgb = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    palette = torch.tensor(MASK_COLORS, dtype=torch.float32)  # (K, 3)
    colour = palette[(mask - 1).remainder(len(MASK_COLORS))].permute(2, 0, 1)  # (3, H, W)
    tinted = mask != 0
    if ignore is not None:
        is_ignore = mask == ignore
        colour = torch.where(is_ignore, torch.tensor(IGNORE_COLOR).view(3, 1, 1).float(), colour)
        tinted = tinted | is_ignore
    out = torch.where(tinted, (1 - alpha) * rgb.float() + alpha * colour, rgb.float())
    return out.round().clamp(0, 255).to(torch.uint8)


def make_paired_preview(
    dataset: Any,
    config: AugmentConfig | str | Path,
    *,
    n: int = 16,
    rows: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    alpha: float = 0.5,
    title: str | None = None,
) -> Image.Image:
    """The preview grid of a segmentation data set: each tile shows its mask over the image.

    As `make_preview`, for a `gpuaug.data.paired.PairedDataset`: each row one pair picked with the
    seed, the first column as decoded, then ``ceil(n / rows)`` augmentations whose masks were
    warped with the same params (`gpuaug.augment.targets.apply_mask`, the data set's ``mask_fill``,
    drawn grey), every mask drawn over its image with `overlay_mask`.

    Returns:
        An RGB ``PIL.Image`` of size ``grid_layout(n, rows, dataset.target_size, config).size``
        (fewer rows if the data set holds fewer readable pairs).

    Raises:
        ValueError: as `make_preview`; a data set without ``target_size`` or without a readable
            pair.
    """
    from gpuaug.augment.targets import apply_mask

    config_name = str(config) if not isinstance(config, AugmentConfig) else "custom config"
    if not isinstance(config, AugmentConfig):
        config = load_config(config)
    if dataset.target_size is None:
        raise ValueError("the dataset to preview needs a `target_size`; got None")
    target_size = dataset.target_size
    layout = grid_layout(n, rows, target_size, config)
    select = torch.Generator().manual_seed(seed)
    sources: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    failures: list[tuple[str, str]] = []
    for index in torch.randperm(len(dataset), generator=select).tolist():
        if len(sources) >= layout.rows:
            break
        try:
            sources.append((dataset.pairs[index][0], *dataset.load(index)))
        except ImageLoadError as err:
            failures.append((err.path, err.reason or str(err)))
    if not sources:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in failures[:3])
        raise ValueError(f"no readable image/mask pair to preview (skipped: {reasons})")
    layout = dataclasses.replace(layout, rows=len(sources))

    device = torch.device(device)
    augment, generator = _preview_augment(config, device, seed)
    extras = _has_extras(config)
    fill = getattr(dataset, "mask_fill", None)
    canvas, draw, font = _start_canvas(
        layout,
        title or f"gpuaug preview: {config_name}  seed={seed}  (masks overlaid)",
        f"first column: original ({target_size[0]}x{target_size[1]}); then {layout.per_row} "
        f"augmentations each; mask_fill {fill} grey; normalisation not shown",
    )
    for row, (path, image, mask) in enumerate(sources):
        batch = image.unsqueeze(0).expand(layout.per_row, -1, -1, -1).contiguous().to(device)
        masks = mask.unsqueeze(0).expand(layout.per_row, -1, -1, -1).to(device)
        with torch.no_grad():
            params = augment.sample_params(batch, generator=generator)
            out, kornia = _augment_tiles(augment, batch, params, generator)
            tiles = _to_uint8(out)
            warped = apply_mask(masks, params, augment.config, mask_fill=fill or 0)
            if augment.kornia is not None:  # the same kornia params, data_keys=["mask"]
                warped = augment.kornia.apply_masks(warped, augment.last_kornia_params)
            warped = warped.cpu()
        y = layout.header_height + row * layout.cell_height
        labels = sorted(set(mask.unique().tolist()))
        original = ["original", f"labels {labels[:6]}", Path(path).name]
        _draw_cell(draw, canvas, layout, font, 0, y, overlay_mask(image, mask, alpha=alpha),
                   original)  # fmt: skip
        for k in range(layout.per_row):
            tile = overlay_mask(tiles[k], warped[k], alpha=alpha, ignore=fill or None)
            lines = caption_lines(params, k, extras=extras) + _kornia_line(kornia, k)
            _draw_cell(draw, canvas, layout, font, k + 1, y, tile, lines)
    return canvas


# ----------------------------------------------------------------------------- boxes


def draw_boxes(
    image: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """An image with its valid ``xyxy`` boxes outlined, coloured by label (``MASK_COLORS``).

    Shape:
        image (C, H, W) uint8; boxes (N, 4) float (continuous pixel coordinates); valid, labels
        (N,) -> (3, H, W) uint8, CPU.
    """
    picture = _tensor_to_pil(image.detach().cpu())
    draw = ImageDraw.Draw(picture)
    rows = zip(boxes.detach().cpu().tolist(), valid.cpu().tolist(), labels.cpu().tolist(),
               strict=True)  # fmt: skip
    for (x0, y0, x1, y1), ok, label in rows:
        if ok:
            colour = MASK_COLORS[int(label) % len(MASK_COLORS)]
            # pixel (r, c) covers [c, c + 1): the outline runs on the box's edge pixels
            draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def make_detection_preview(
    dataset: Any,
    config: AugmentConfig | str | Path,
    *,
    n: int = 16,
    rows: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    title: str | None = None,
) -> Image.Image:
    """The preview grid of a `gpuaug.data.detection.DetectionDataset`: boxes drawn on every tile.

    As `make_paired_preview`: each row one image picked with the seed, first column as
    decoded with its boxes, then augmentations with their boxes mapped by
    `gpuaug.augment.targets.apply_boxes` (the data set's ``min_visibility``; dropped boxes not
    drawn).
    """
    from gpuaug.augment.targets import apply_boxes

    config_name = str(config) if not isinstance(config, AugmentConfig) else "custom config"
    if not isinstance(config, AugmentConfig):
        config = load_config(config)
    target_size = dataset.target_size
    layout = grid_layout(n, rows, target_size, config)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    sources: list[Any] = []
    for index in order.tolist():
        if len(sources) >= layout.rows:
            break
        try:
            sources.append((index, dataset.load(index)))
        except ImageLoadError:
            continue
    if not sources:
        raise ValueError("no readable image to preview")
    layout = dataclasses.replace(layout, rows=len(sources))
    device = torch.device(device)
    augment, generator = _preview_augment(config, device, seed)
    extras = _has_extras(config)
    canvas, draw, font = _start_canvas(
        layout,
        title or f"gpuaug preview: {config_name}  seed={seed}  (boxes)",
        f"first column: original ({target_size[0]}x{target_size[1]}); then "
        f"{layout.per_row} augmentations each; normalisation not shown",
    )
    h, w = target_size
    for row, (index, image) in enumerate(sources):
        k = layout.per_row
        batch = image.unsqueeze(0).expand(k, -1, -1, -1).contiguous().to(device)
        boxes = dataset.boxes[index].expand(k, -1, -1).to(device)
        valid = dataset.box_valid[index].expand(k, -1).to(device)
        with torch.no_grad():
            params = augment.sample_params(batch, generator=generator)
            out, kornia = _augment_tiles(augment, batch, params, generator)
            tiles = _to_uint8(out)
            visibility = getattr(dataset, "min_visibility", 0.0)
            out, ok = apply_boxes(
                boxes, params, augment.config, h, w, valid=valid, min_visibility=visibility
            )
            if augment.kornia is not None:  # the same kornia params, corners as keypoints
                out, ok = augment.kornia.apply_boxes(
                    out,
                    augment.last_kornia_params,
                    *tiles.shape[-2:],
                    valid=ok,
                    min_visibility=visibility,
                )
        labels = dataset.labels[index]
        y = layout.header_height + row * layout.cell_height
        count = int(dataset.box_valid[index].sum())
        first = draw_boxes(image, dataset.boxes[index], dataset.box_valid[index], labels)
        name = Path(dataset.samples[index][0]).name
        _draw_cell(draw, canvas, layout, font, 0, y, first, ["original", f"{count} boxes", name])
        for j in range(k):
            tile = draw_boxes(tiles[j], out[j], ok[j], labels)
            lines = caption_lines(params, j, extras=extras) + _kornia_line(kornia, j)
            _draw_cell(draw, canvas, layout, font, j + 1, y, tile, lines)
    return canvas


# ----------------------------------------------------------------------------- recipes

#: Caption lines under a recipe tile: crop, auto-augment, erasing, mixing.
RECIPE_CAPTION_LINES = 4

_NO_MAGNITUDE = ("Identity", "AutoContrast", "Equalize")


def recipe_caption_lines(params: Any, i: int, per_row: int) -> list[str]:
    """Tile ``i``'s draws of a `gpuaug.augment.recipe.RecipeParams`, one short line per step.

    Args:
        params: The recipe's params of the whole grid (one batch, row after row).
        i: The tile (row ``i // per_row``, augmented column ``i % per_row + 1``).
        per_row: Augmented tiles per row, to name a MixUp / CutMix partner by its place.

    Returns:
        Lines such as ``["crop 120x96 at 10,40 flip", "Rotate -23.4", "erase 40x30 at 5,6",
        "CutMix r2c3 lam 0.63"]`` (rows x columns, top,left in the decoded image's pixels;
        erased boxes in the output's pixels); steps that are off are left out.
    """
    crop = params.crop
    top, left = crop.top_left_px[i].tolist()
    h, w = crop.size_px[i].tolist()
    lines = [f"crop {h}x{w} at {top},{left}" + (" flip" if bool(crop.flip_h[i]) else "")]
    if params.auto_augment is not None:
        a = params.auto_augment
        ops = zip(a.op[i].tolist(), a.magnitude[i].tolist(), strict=True)
        lines.append(", ".join(OPS[k] if OPS[k] in _NO_MAGNITUDE else f"{OPS[k]} {m:+.3g}"
                               for k, m in ops))  # fmt: skip
    if params.erasing is not None:
        e = params.erasing
        boxes = [
            "{2}x{3} at {0},{1}".format(*e.box_tlhw_px[i, k].tolist())
            for k in range(e.active.shape[1])
            if bool(e.active[i, k])
        ]
        lines.append("erase " + "; ".join(boxes) if boxes else "not erased")
    if params.mix is not None:
        m = params.mix
        partner, lam = int(m.partner[i]), float(m.lam[i])
        if partner == i or lam == 1.0:
            lines.append("not mixed")
        else:
            kind = "CutMix" if bool(m.use_cutmix[i]) else "MixUp"
            place = f"r{partner // per_row + 1}c{partner % per_row + 1}"
            lines.append(f"{kind} {place} lam {lam:.2f}")
    return lines


def make_recipe_preview(
    directory: str | Path | DirectoryDataset,
    recipe: Any = "imagenet_rrc",
    *,
    n: int = 16,
    rows: int = 4,
    seed: int = 0,
    target_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    interpolation: str = "bilinear",
    title: str | None = None,
) -> Image.Image:
    """Render a grid of source images and the training recipe's outputs, each captioned with
    its own draws.

    As `make_preview` (rows of source images picked with the seed, classes in turn), but the
    tiles are a `gpuaug.augment.recipe.TrainRecipe` batch: every row's source repeated
    ``ceil(n / rows)`` times, all rows in one batch with the row's class as the label, run
    with ``seed``. So each tile draws its own crop, flip, op, erasing and mixing, and a
    MixUp / CutMix partner is another tile (named ``r<row>c<column>`` in the caption, the
    column counted from the first augmented one). The recipe runs on the CPU.

    Args:
        directory: Folder with one subfolder per class, or a `DirectoryDataset` (its size,
            colour mode and interpolation are used; with ``target_size=None`` each image
            keeps its own size, capped by its ``max_side``, and is cropped from its own pixels
            as the loader's ragged batches are).
        recipe: A `TrainRecipe`, a `RecipeConfig` of kind "train", a preset name
            ("imagenet_rrc") or a YAML path.
        n: Recipe outputs in the grid; each row gets ``ceil(n / rows)``.
        rows: Source images, one per row.
        seed: Seeds the choice of source images and the recipe's draws.
        target_size: (height, width) images are decoded to, as the loader would; the recipe
            crops from that image.
        color_mode: "rgb" (the recipe's mean and std have one value per channel).
        interpolation: Resize interpolation (Keras names).
        title: Header text; defaults to the recipe's name and the seed.

    Returns:
        An RGB ``PIL.Image``: tiles at the recipe's output size (the first column the decoded
        image, resized to it for display).

    Raises:
        ValueError: as `make_preview`; an evaluation recipe; a folder with more classes than
            the recipe's ``num_classes`` when it mixes; a ``color_mode`` with another channel
            count than the recipe's ``mean``.
    """
    from gpuaug.augment.recipe import RecipeConfig, TrainRecipe, is_preset_name, load_recipe

    named_preset = isinstance(recipe, str) and is_preset_name(recipe)
    if isinstance(recipe, TrainRecipe):
        name = "custom recipe"
    else:
        name = "custom recipe" if isinstance(recipe, RecipeConfig) else str(recipe)
        recipe = TrainRecipe(recipe)
    cfg = recipe.config
    if isinstance(directory, DirectoryDataset):  # target_size=None: as the ragged loader
        dataset, directory = directory, directory.root
    else:
        dataset = DirectoryDataset(
            directory,
            target_size=_check_target_size(target_size),
            color_mode=color_mode,
            class_mode=None,
            interpolation=interpolation,
            on_error="skip",
        )
    if named_preset and cfg.mixes and cfg.num_classes != len(dataset.classes):
        # as the loader does: a preset named by the user takes the folder's classes
        recipe = TrainRecipe(load_recipe(cfg, num_classes=len(dataset.classes)))
        cfg = recipe.config
    if cfg.mixes and cfg.num_classes is not None and len(dataset.classes) > cfg.num_classes:
        raise ValueError(
            f"the recipe mixes with `num_classes`={cfg.num_classes}, but {str(directory)!r} "
            f"has {len(dataset.classes)} classes"
        )
    if len(cfg.mean) != dataset.channels:
        raise ValueError(
            f"the recipe normalises {len(cfg.mean)} channels (mean / std); "
            f"`color_mode`={dataset.color_mode!r} gives {dataset.channels}"
        )
    layout = grid_layout(n, rows, cfg.output_size)
    layout = dataclasses.replace(layout, caption_lines=RECIPE_CAPTION_LINES)
    sources = _pick_sources(dataset, layout.rows, torch.Generator().manual_seed(seed), directory)
    layout = dataclasses.replace(layout, rows=len(sources))
    k = layout.per_row
    images = [image for _, _, image in sources]
    if dataset.target_size is None:  # each at its own size: padded, with its sizes
        padded, sizes = unpack(*pack_images(images), dataset.channels)
        decoded = "each at its own size"
    else:
        padded, sizes = torch.stack(images), None
        decoded = "x".join(map(str, padded.shape[-2:]))
    batch = padded.repeat_interleave(k, dim=0)
    labels = torch.tensor([dataset.classes.index(label) for _, label, _ in sources])
    with torch.no_grad():
        out, _ = recipe(
            batch, labels.repeat_interleave(k), seed=seed,
            sizes=None if sizes is None else sizes.repeat_interleave(k, dim=0),
        )  # fmt: skip
    params = recipe.last_params
    assert params is not None  # set by the call above
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    tiles = _to_uint8((out * std + mean) * 255.0)
    originals = torch.cat(
        [
            _to_uint8(
                torch.nn.functional.interpolate(
                    image[None].float(),
                    size=cfg.output_size,
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )  # fmt: skip
            )
            for image in images
        ]
    )
    canvas, draw, font = _start_canvas(
        layout,
        title or f"gpuaug recipe preview: {name}  seed={seed}",
        f"first column: original ({decoded}, shown at the output size); then "
        f"{k} recipe outputs each, one batch (partners are other tiles); normalisation undone",
    )
    for row, (path, label, _) in enumerate(sources):
        y = layout.header_height + row * layout.cell_height
        original = ["original", label, Path(path).name]
        _draw_cell(draw, canvas, layout, font, 0, y, originals[row], original)
        for j in range(k):
            lines = recipe_caption_lines(params, row * k + j, k)
            _draw_cell(draw, canvas, layout, font, j + 1, y, tiles[row * k + j], lines)
    return canvas
