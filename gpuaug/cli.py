"""The ``gpuaug`` command line: inspect a folder, preview augmentations, run benchmarks,
write tar shards.

Usage::

    gpuaug inspect DIR [--config CONFIG] [--batch-size 32] [--validation-split 0.2]
                   [--follow-links] [--full]
    gpuaug preview DIR [--config chollet_cats_dogs | --recipe imagenet_rrc] [--out grid.png]
                   [--n 16] [--rows 4] [--seed 0]
    gpuaug bench [benchmark options...]
    gpuaug shard DIR OUT [--samples-per-shard 1000]

Errors print ``gpuaug: error: <message>`` to stderr and exit with status 2 (bad usage,
bad config, missing folder) or 1 (a failure while running). Set ``GPUAUG_TRACEBACK=1`` to
see the Python traceback as well.

Why one module (over 600 lines): the commands share the parser conventions, the image
options, the config and folder checks and the error guard that turns a bad argument into one
line and an exit status; each command is one ``_add_NAME`` function and its handler.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from inspect import signature
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "build_parser", "main"]

PROG = "gpuaug"

PREVIEW_DEFAULT_CONFIG = "chollet_cats_dogs"
PREVIEW_DEFAULT_OUT = "grid.png"

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2

_DESCRIPTION = (
    "Keras' ImageDataGenerator.flow_from_directory for PyTorch, augmented on the GPU.\n"
    "Inspect an image folder, preview its augmentations, run the benchmarks, write a class\n"
    "folder as WebDataset-layout tar shards."
)

_MAIN_EPILOG = """\
examples:
  gpuaug inspect data/train --validation-split 0.2
  gpuaug preview data/train                  # the book's augmentation -> grid.png
  gpuaug bench --help
  gpuaug shard data/train shards/            # tar shards for flow_from_shards

Run `gpuaug COMMAND --help` for a command's options.
"""

_INSPECT_EPILOG = """\
examples:
  gpuaug inspect data/train
  gpuaug inspect data/train --config configs/chollet_cats_dogs.yaml --target-size 150 150
  gpuaug inspect data/train --validation-split 0.2 --batch-size 64
  gpuaug inspect data/train --full        # decode every file to find corrupt ones
  gpuaug inspect data/train --follow-links  # count images in linked sub-folders too
  gpuaug inspect data/train -v            # plus the loader's describe(): seeds, workers

Bad files (unreadable, truncated, not an image) are listed with the reason and skipped,
as flow_from_directory(..., on_error="skip") would (its default, on_error="raise", stops
with an error naming them). Without --full only the image
headers are read, which is fast but misses files that are truncated after the header.
"""

_PREVIEW_EPILOG = """\
examples:
  gpuaug preview data/train                  # --config chollet_cats_dogs --out grid.png
  gpuaug preview data/train --config configs/strong.yaml --out grid.png --n 24 --rows 3
  gpuaug preview data/train --config my.yaml --out grid.png --seed 1 --target-size 64 64
  gpuaug preview data/train --recipe imagenet_rrc --out recipe.png   # the training recipe

Each row is one source image (classes taken in turn): the first column is the image as the
loader decodes it, the others are fresh augmentations captioned with their sampled
parameters (rotation, shifts in pixels, shear, zoom, flips). The same --seed gives the same
PNG. Normalisation (rescale, centring, ZCA) is not shown. Without --config the grid shows
the chollet_cats_dogs preset (the book's settings: rotation 40, shifts 0.2, shear 0.2, zoom
0.2, horizontal flip); --config none shows the images as decoded.

With --recipe (a training recipe: a preset name such as imagenet_rrc, or a YAML file) the
tiles are the recipe's outputs instead, all in one batch: each captioned with its crop box
and flip, op and magnitude, erased boxes, and MixUp / CutMix partner (another tile, r<row>c<col>)
and lambda. Images are then decoded at 256 256 unless --target-size says otherwise, and the
recipe runs on the CPU.
"""

_BENCH_EPILOG = """\
All arguments after `bench` go to benchmarks/bench.py; run `gpuaug bench --help` for them.
In a repository checkout it runs benchmarks/bench.py, from an installed wheel the packaged copy
gpuaug.benchmarks; results go to ./gpuaug-bench/ unless --out says where (the committed
results: --out benchmarks/results/cpu.json).
"""

_BENCH_MISSING = (
    "gpuaug bench: the benchmark harness was not found (benchmarks/ not found next to the "
    "package, and no gpuaug/benchmarks/ inside it); reinstall gpuaug from its wheel or run "
    "from the repository checkout"
)


class CLIError(Exception):
    """An expected failure: printed as ``gpuaug: error: <message>``, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    """The ``gpuaug`` argument parser, one sub-command per entry of :data:`COMMANDS`."""
    from gpuaug import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def _command(commands, name: str, help: str, description: str, epilog: str, **kwargs):
    """One sub-command's parser, formatted as all the others."""
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _add_inspect(commands) -> None:
    inspect = _command(
        commands,
        "inspect",
        help="classes, images per class, bad files, steps per epoch, augmentation settings",
        description="Summarise a class-per-subfolder image directory: classes, images per\n"
        "class, bad files, samples and steps per epoch, and the augmentation settings.",
        epilog=_INSPECT_EPILOG,
    )
    inspect.add_argument("directory", metavar="DIR", help="folder with one subfolder per class")
    inspect.add_argument(
        "--config",
        help="augmentation config: a YAML file or a preset name (chollet_cats_dogs, none, strong)",
    )
    inspect.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    inspect.add_argument(
        "--validation-split",
        type=float,
        default=None,
        help="fraction held out for validation (default: the config's, else none)",
    )
    _add_image_options(inspect)
    inspect.add_argument(
        "--follow-links",
        action="store_true",
        help="descend into linked sub-folders, as flow_from_directory(follow_links=True)",
    )
    inspect.add_argument(
        "--full",
        action="store_true",
        help="decode every file to find corrupt ones (slower; default reads headers only)",
    )
    inspect.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the loader's own description (flow_from_directory(...).describe())",
    )
    inspect.set_defaults(handler=_inspect)


def _add_preview(commands) -> None:
    preview = _command(
        commands,
        "preview",
        help="a PNG grid of source images and random augmentations, captioned",
        description="Write a PNG grid: each row one source image, first column the original,\n"
        "the rest fresh augmentations captioned with their sampled parameters.",
        epilog=_PREVIEW_EPILOG,
    )
    preview.add_argument("directory", metavar="DIR", help="folder with one subfolder per class")
    preview.add_argument(
        "--config",
        default=None,
        help="augmentation config: a YAML file or a preset name (chollet_cats_dogs, none, "
        f"strong); default: {PREVIEW_DEFAULT_CONFIG}, the book's settings",
    )
    preview.add_argument(
        "--out",
        type=Path,
        default=Path(PREVIEW_DEFAULT_OUT),
        help=f"PNG file to write (default: {PREVIEW_DEFAULT_OUT} in the current folder)",
    )
    preview.add_argument(
        "--n",
        type=int,
        default=16,
        help="augmented tiles in the grid, spread over the rows (default: 16)",
    )
    preview.add_argument(
        "--recipe",
        default=None,
        help="preview a training recipe instead of --config: a preset name (imagenet_rrc) or "
        "a YAML file",
    )
    preview.add_argument("--rows", type=int, default=4, help="source images, one per row (4)")
    preview.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_image_options(preview, target_default=None)
    preview.add_argument(
        "--device",
        default="cpu",
        help="device the augmentation runs on (default: cpu, reproducible everywhere)",
    )
    preview.set_defaults(handler=_preview)


def _add_bench(commands) -> None:
    bench = _command(
        commands,
        "bench",
        help="run the benchmark harness (benchmarks/bench.py, shipped in the wheel)",
        description="Run the benchmark harness (benchmarks/bench.py).",
        epilog=_BENCH_EPILOG,
        add_help=False,
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for benchmarks/bench.py")
    bench.set_defaults(handler=None)


def _add_shard(commands: Any) -> None:
    """``gpuaug shard DIR OUT``: a class folder -> WebDataset-layout tar shards."""
    shard = commands.add_parser(
        "shard",
        help="write a class folder as WebDataset-layout tar shards (for flow_from_shards)",
        description=(
            "Write DIR/<class>/<image> as OUT/shard-000000.tar, ... (KEY.<ext> with the file's "
            "bytes, KEY.cls with its class index) and OUT/classes.json."
        ),
    )
    shard.add_argument("directory", help="the class folder")
    shard.add_argument("out", help="the folder the shards are written to")
    shard.add_argument("--samples-per-shard", type=int, default=1000, metavar="N")

    def run(args: argparse.Namespace) -> int:
        from gpuaug.data.shards import write_shards

        directory = _existing_dir(args.directory)  # named, exit 2, as inspect and preview do
        paths = write_shards(directory, args.out, args.samples_per_shard)
        last = len(paths) - 1
        print(f"wrote {len(paths)} shard(s): {args.out}/shard-{{000000..{last:06d}}}.tar")
        return 0

    shard.set_defaults(handler=run)


#: The sub-commands, in ``gpuaug --help`` order: each adds its parser to the sub-parsers and
#: sets ``handler`` (a function of the parsed arguments returning the exit status). A new
#: command is one ``_add_NAME(commands)`` function and its handler, listed here.
COMMANDS = [_add_inspect, _add_preview, _add_bench, _add_shard]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 for a failure while running, 2 for bad usage, config or folder.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # `bench` forwards everything (its own --help included) to benchmarks/bench.py.
    if argv and argv[0] == "bench":
        return _guard(lambda: _bench(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return _fail(
            "a command is required: inspect, preview, bench or shard (see gpuaug --help)", 2
        )
    return _guard(lambda: args.handler(args))


def _guard(run) -> int:
    """Run a command, turning expected errors into one-line messages and exit codes."""
    from gpuaug.data.image import ImageLoadError

    try:
        return run()
    except CLIError as err:
        return _fail(str(err), err.code)
    except ImageLoadError as err:
        return _fail(str(err), EXIT_RUNTIME)
    except (FileNotFoundError, NotADirectoryError) as err:
        return _fail(_os_message(err), EXIT_USAGE)
    except (ValueError, TypeError) as err:
        return _fail(str(err), EXIT_USAGE)
    except OSError as err:
        return _fail(_os_message(err), EXIT_RUNTIME)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _fail(message: str, code: int) -> int:
    if os.environ.get("GPUAUG_TRACEBACK"):
        traceback.print_exc()
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _os_message(err: OSError) -> str:
    if err.filename is not None and err.strerror:
        return f"{err.strerror}: {str(err.filename)!r}"
    return str(err)


def _add_image_options(
    parser: argparse.ArgumentParser, target_default: tuple[int, int] | None = (150, 150)
) -> None:
    """--target-size and --color-mode: how images are decoded, the same for every command.

    ``target_default=None``: the command picks the size (preview: 150 150, 256 256 with
    --recipe)."""
    parser.add_argument(
        "--target-size",
        type=int,
        nargs=2,
        default=target_default,
        metavar=("H", "W"),
        help="size images are resized to, height width (default: 150 150"
        + (")" if target_default else "; 256 256 with --recipe)"),
    )
    parser.add_argument(
        "--color-mode",
        choices=("rgb", "rgba", "grayscale"),
        default="rgb",
        help="colour mode (default: rgb)",
    )


# ----------------------------------------------------------------------------- inspect


def _inspect(args: argparse.Namespace) -> int:
    from gpuaug.data.directory import DirectoryDataset
    from gpuaug.loader.sampler import EpochBatchSampler

    directory = _existing_dir(args.directory)
    _check_positive("--batch-size", args.batch_size)
    _check_target(args.target_size)
    config = _config(args.config) if args.config else None
    config_split = config.validation_split if config is not None else 0.0
    split = config_split if args.validation_split is None else args.validation_split
    if not 0.0 <= split < 1.0:
        raise CLIError(f"--validation-split must be in [0, 1); got {split}")
    if config_split and split != config_split:
        raise CLIError(
            f"--validation-split {split} contradicts the config's validation_split "
            f"{config_split}; give it in one place"
        )
    target_size = tuple(args.target_size)
    options = dict(
        target_size=target_size,
        color_mode=args.color_mode,
        on_error="skip",
        verify="full" if args.full else "header",
        follow_links=args.follow_links,
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = DirectoryDataset(directory, **options)
    # Skipped files are listed below; keep the other warnings (empty class folders) as notes.
    notes = [str(w.message) for w in caught if not str(w.message).startswith("Skipped ")]
    counts = dataset.counts()
    width = max([len(name) for name in dataset.classes] + [5])
    out = [f"Directory: {directory}"]
    out.append(f"Classes ({dataset.num_classes}): {', '.join(dataset.classes)}")
    out.append("Images per class:")
    for name in dataset.classes:
        count = counts.get(name, 0)
        out.append(f"  {name:<{width}}  {count}" + ("  (no images)" if count == 0 else ""))
    out.append(f"  {'total':<{width}}  {len(dataset)}")
    check = "decoded every file" if args.full else "read headers only; --full decodes every file"
    if dataset.skipped:
        out.append(f"Bad files ({len(dataset.skipped)}, skipped; {check}):")
        for path, reason in dataset.skipped:
            out.append(f"  {_relative(path, directory)}: {reason}")
        out.append(
            "  (the counts above and below leave them out, as on_error='skip' does; the "
            "loaders' default, on_error='raise', stops at them)"
        )
    else:
        out.append(f"Bad files: none ({check})")

    # One loader per subset, over the same checked files, so the numbers agree.
    subsets = ["training", "validation"] if split > 0 else [None]
    out.append(
        f"Epoch (batch size {args.batch_size}, target size {target_size[0]}x{target_size[1]}"
        + (f", validation_split {split}" if split > 0 else "")
        + "):"
    )
    parts = []
    for subset in subsets:
        name = subset or "all"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the dataset's warnings, reported above
                part = (
                    dataset
                    if subset is None
                    else DirectoryDataset(
                        directory, validation_split=split, subset=subset, **options
                    )
                )
        except ValueError as err:
            out.append(f"  {name:<10}  no samples ({err})")
            continue
        # The loader's own epoch length (len(loader) is len(its sampler)), without building
        # the loader and so without importing the augmentation stack.
        shuffle = subset != "validation"
        steps = len(EpochBatchSampler(len(part), args.batch_size, shuffle=shuffle, seed=0))
        parts.append((part, shuffle))
        out.append(
            f"  {name:<10}  {len(part)} samples, {steps} step{'s' if steps != 1 else ''} per epoch"
        )

    source = (
        args.config
        if args.config
        else f"no --config: none; `gpuaug preview` shows {PREVIEW_DEFAULT_CONFIG} without one"
    )
    out.append(f"Augmentation ({source}):")
    description = config.describe().strip() if config is not None else ""
    for line in (description or "no augmentation").splitlines():
        out.append(f"  {line}")
    if args.verbose and parts:
        from gpuaug.loader.gpu_loader import GPULoader, LoaderConfig

        part, shuffle = parts[0]
        loader_config = LoaderConfig(batch_size=args.batch_size, shuffle=shuffle, progress=False)
        loader = GPULoader(part, config, loader_config)
        out.append(f"Loader ({part.subset or 'all images'}, its describe()):")
        for line in loader.describe(verbose=True).strip().splitlines():
            out.append(f"  {line}")
    if notes:
        out.append("Notes:")
        out.extend(f"  {note}" for note in notes)
    print("\n".join(out))
    return EXIT_OK


# ----------------------------------------------------------------------------- preview


def _preview(args: argparse.Namespace) -> int:
    from gpuaug.preview import make_preview

    directory = _existing_dir(args.directory)
    _check_positive("--n", args.n)
    _check_positive("--rows", args.rows)
    if args.recipe is not None:
        return _preview_recipe(args, directory)
    if args.target_size is None:
        args.target_size = (150, 150)
    _check_target(args.target_size)
    config_name = args.config
    if config_name is None:
        config_name = PREVIEW_DEFAULT_CONFIG
        print(
            f"{PROG}: note: no --config given: showing the {PREVIEW_DEFAULT_CONFIG} preset "
            "(the book's settings); --config none|strong|FILE.yaml picks another",
            file=sys.stderr,
        )
    config = _config(config_name)
    out = args.out
    if out.parent and not out.parent.exists():
        raise CLIError(f"output folder does not exist: {str(out.parent)!r}")
    name = Path(config_name).stem if _looks_like_path(config_name) else config_name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = make_preview(
            directory,
            config,
            n=args.n,
            rows=args.rows,
            seed=args.seed,
            target_size=tuple(args.target_size),
            color_mode=args.color_mode,
            device=args.device,
            title=f"gpuaug preview: {name}  seed={args.seed}",
        )
    for warning in caught:
        print(f"{PROG}: note: {warning.message}", file=sys.stderr)
    _write_png(image, out)
    return EXIT_OK


def _write_png(image: Any, out: Path) -> None:
    """Saves a preview grid to ``out`` and says where (a write error exits with
    EXIT_RUNTIME, naming the file)."""
    try:
        image.save(out, format="PNG")
    except OSError as err:
        raise CLIError(f"cannot write {str(out)!r}: {err}", EXIT_RUNTIME) from err
    print(f"wrote {out.resolve()} ({image.width}x{image.height} PNG)")


def _preview_recipe(args: argparse.Namespace, directory: Path) -> int:
    """``preview --recipe``: the training recipe's outputs, captioned with their draws."""
    from gpuaug.augment.recipe import TrainRecipe, is_preset_name, load_recipe
    from gpuaug.data.directory import find_classes
    from gpuaug.preview import make_recipe_preview

    if args.config is not None:
        raise CLIError("--config and --recipe preview different things: give one of them")
    if args.device != "cpu":
        raise CLIError(f"--recipe previews run on the CPU; got --device {args.device!r}")
    target = (256, 256) if args.target_size is None else tuple(args.target_size)
    _check_target(target)
    name = args.recipe
    if _looks_like_path(name) and not Path(name).exists():
        raise CLIError(f"recipe file not found: {name!r}")
    try:
        config = load_recipe(name)
        if is_preset_name(name) and config.mixes:  # as the loader: the folder's classes
            config = load_recipe(config, num_classes=max(1, len(find_classes(directory)[0])))
        recipe = TrainRecipe(config)
    except (ValueError, TypeError) as err:
        raise CLIError(f"invalid recipe {name!r}: {err}") from err
    out = args.out
    if out.parent and not out.parent.exists():
        raise CLIError(f"output folder does not exist: {str(out.parent)!r}")
    shown = Path(name).stem if _looks_like_path(name) else name
    image = make_recipe_preview(
        directory,
        recipe,
        n=args.n,
        rows=args.rows,
        seed=args.seed,
        target_size=target,
        color_mode=args.color_mode,
        title=f"gpuaug recipe preview: {shown}  seed={args.seed}",
    )
    _write_png(image, out)
    print(recipe.describe())
    return EXIT_OK


# ----------------------------------------------------------------------------- bench


def _bench_module():
    """The harness: the checkout's ``benchmarks.bench`` next to the package (where the
    results are committed), else the installed wheel's ``gpuaug.benchmarks.bench``."""
    import gpuaug

    root = Path(gpuaug.__file__).resolve().parent.parent
    if (root / "benchmarks" / "bench.py").is_file():
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        name = "benchmarks.bench"
    elif (Path(gpuaug.__file__).resolve().parent / "benchmarks" / "bench.py").is_file():
        name = "gpuaug.benchmarks.bench"
    else:
        raise CLIError(_BENCH_MISSING)
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise CLIError(f"cannot import the benchmark harness {name}: {err}", EXIT_RUNTIME) from err


def _bench(argv: list[str]) -> int:
    bench = _bench_module()
    # Name the harness "gpuaug bench" in its usage line when it lets us.
    if "prog" in signature(bench.main).parameters:
        status = bench.main(argv, prog=f"{PROG} bench")
    else:
        status = bench.main(argv)
    return int(status or 0)


# ----------------------------------------------------------------------------- helpers


def _existing_dir(path: str) -> Path:
    directory = Path(path)
    if not directory.exists():
        raise CLIError(f"directory not found: {path!r}")
    if not directory.is_dir():
        raise CLIError(f"not a directory: {path!r}")
    return directory


def _config(name_or_path: str):
    """Load a config, naming the file (or preset) in any error."""
    import yaml

    from gpuaug.augment.config import load_config

    if _looks_like_path(name_or_path) and not Path(name_or_path).exists():
        raise CLIError(f"config file not found: {name_or_path!r}")
    try:
        return load_config(name_or_path)
    except FileNotFoundError as err:
        raise CLIError(f"config not found: {name_or_path!r} ({_os_message(err)})") from err
    except (ValueError, TypeError, KeyError) as err:
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        named = name_or_path in message or Path(name_or_path).name in message
        where = "" if named else f" {name_or_path!r}"
        raise CLIError(f"invalid config{where}: {message}") from err
    except yaml.YAMLError as err:
        raise CLIError(f"invalid config {name_or_path!r}: not valid YAML ({err})") from err


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith((".yaml", ".yml"))


def _check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise CLIError(f"{flag} must be >= 1; got {value}")


def _check_target(size: Sequence[int]) -> None:
    if any(v < 1 for v in size):
        raise CLIError(
            f"--target-size must be two positive integers; got {' '.join(map(str, size))}"
        )


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
