"""`derain INPUT... -o OUTDIR`: remove rain from image files and folders, with a progress bar on stderr.

By default the images go through the service's own core in this process (the same `Derainer`: decode,
tiles, the ONNX model, stitch, encode); with `--url` they are sent to a running service's POST /derain
instead (`--api-key`, or DERAIN_API_KEY, when it asks for one). Local defaults are the service's
(`service.settings.Settings`).

- Inputs: image files, and folders of them; `-r` also walks subfolders and keeps their layout under
  OUTDIR. Images are recognised by extension (.jpg .jpeg .png .webp .tif .tiff .bmp); other files are
  skipped with a warning, hidden ones (".name") silently.
- Outputs keep the input's name; the extension changes only with the format (`--format`, else the input's
  format when it is PNG, JPEG or WebP, else PNG). An existing output is replaced; an input never is.
- `--compare` writes the original and the derained image side by side (twice as wide) instead.
- Exit status: 0 when every image was written (skipped non-images do not count), 1 when any image failed
  or an input does not exist, 2 for bad usage or an unusable model or service (nothing more is tried).

Installed as the `derain` console script (`service.cli:main`); `python -m service.cli` runs it from a
checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.cli.backends import Backend, Fatal, FileFailed, LocalBackend, ServerBackend
from service.core.pipeline import OUTPUT_FORMATS, DecodedImage, OutputFormat, encode, output_format
from service.core.pipeline.scale import AUTO, MAX_SCALE, ScaleChoice, ScaleError, format_scale, parse_scale
from service.errors import DerainError
from service.settings import Settings

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
SUFFIXES: dict[OutputFormat, tuple[str, ...]] = {
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "webp": (".webp",),
}
_FIELDS = Settings.model_fields  # the service's defaults are the CLI's
DEFAULT_MODEL: Path = _FIELDS["model_path"].default
DEFAULT_TILE_SIZE: int = _FIELDS["tile_size"].default
DEFAULT_WHOLE: int = _FIELDS["whole_max_pixels"].default
DEFAULT_OVERLAP: int = _FIELDS["tile_overlap"].default
DEFAULT_THREADS: int = _FIELDS["threads"].default
EXAMPLES = """examples:
  derain photos/ -o clean/                  the images in photos/ (not in its subfolders)
  derain -r trip/ -o out/ --format webp     trip/ and its subfolders, as WebP, same layout under out/
  derain IMG_1.jpg --compare -o compare/    before|after side by side
  DERAIN_API_KEY=... derain photos/ -o clean/ --url http://gpu-host:8000
"""


@dataclass(frozen=True)
class Job:
    source: Path
    relative: Path  # where its output goes under OUTDIR, with the source's extension


@dataclass
class Plan:
    jobs: list[Job] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)  # not images
    missing: list[Path] = dataclasses.field(default_factory=list)  # neither a file nor a folder
    not_walked: list[Path] = dataclasses.field(default_factory=list)  # folders with subfolders, without -r


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="derain: %(levelname)s: %(message)s")
    outdir: Path = args.output
    if outdir.exists() and not outdir.is_dir():
        return _stop(f"{outdir} exists and is not a folder")
    plan = plan_jobs(args.inputs, args.recursive, outdir)
    for path in plan.skipped:
        _say(f"warning: skipping {path}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for path in plan.missing:
        _say(f"error: {path}: no such file or folder")
    for path in plan.not_walked:
        _say(f"note: the subfolders of {path} were left out; -r derains them too")
    if not plan.jobs:
        _say("nothing to derain")
        return 1 if plan.missing else 0
    try:
        backend = make_backend(args)
    except Fatal as error:
        return _stop(str(error))
    try:
        if not args.quiet:
            _say(f"{len(plan.jobs)} image(s), {backend.description}")
        outdir.mkdir(parents=True, exist_ok=True)
        written, failed = run_jobs(plan.jobs, backend, args)
    except Fatal as error:
        return _stop(str(error))
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    finally:
        backend.close()
    if not args.quiet:
        _say(f"{written} written to {outdir}, {failed} failed, {len(plan.skipped)} skipped")
    return 1 if failed or plan.missing else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="derain",
        description="Remove rain from photos: files, or folders of them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("-r", "--recursive", action="store_true", help="also derain the subfolders' images")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, help="output format (default: the input's)")
    parser.add_argument("--quality", type=_int_in(1, 100), help="JPEG/WebP quality 1-100 (default 90)")
    parser.add_argument("--compare", action="store_true", help="write before|after side-by-side images")
    parser.add_argument(
        "--scale",
        type=_scale,
        default=AUTO,
        help=f"working scale: auto (default, per image) or 1-{format_scale(MAX_SCALE)} (1 = full size); "
        "the rain is found in the image shrunk by it",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    local = parser.add_argument_group("local model (default)")
    local.add_argument("--model", type=Path, help=f"ONNX model (default {DEFAULT_MODEL})")
    local.add_argument("--providers", help="ONNX Runtime providers, comma-separated (default: CUDA if any)")
    local.add_argument(
        "--tile-size", type=_int_in(16, 4096), help=f"tile side, px (default {DEFAULT_TILE_SIZE})"
    )
    local.add_argument(
        "--overlap", type=_int_in(0, 4096), help=f"tile overlap, px (default {DEFAULT_OVERLAP})"
    )
    local.add_argument(
        "--batch", type=_int_in(1, 256), help="tiles per model call (default: 4 on CUDA, 1 on the CPU)"
    )
    local.add_argument(
        "--threads", type=_int_in(0, 1024), help=f"CPU threads (default {DEFAULT_THREADS}: all cores)"
    )
    local.add_argument(
        "--whole-max-pixels",
        type=_int_in(0, 64 << 20),
        help=f"CPU: working images up to this many pixels run whole (default {DEFAULT_WHOLE}; 0: tiles)",
    )
    local.add_argument(
        "--no-second-pass",
        dest="second_pass",
        action="store_const",
        const=False,
        help="auto: one pass even for photos above the size cap (as DERAIN_SECOND_PASS=false)",
    )
    server = parser.add_argument_group("running service")
    server.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8000")
    server.add_argument(
        "--api-key", default=os.environ.get("DERAIN_API_KEY"), help="its API key (default $DERAIN_API_KEY)"
    )
    server.add_argument("--timeout", type=float, default=300.0, help="seconds per image (default 300)")
    args = parser.parse_args(argv)
    local_options = (
        "model",
        "providers",
        "tile_size",
        "overlap",
        "batch",
        "threads",
        "whole_max_pixels",
        "second_pass",
    )
    if args.url and any(getattr(args, name) is not None for name in local_options):
        parser.error(
            "--model, --providers, --tile-size, --overlap, --batch, --threads, --whole-max-pixels and "
            "--no-second-pass are for local mode (the service's DERAIN_SECOND_PASS decides there)"
        )
    return args


def _scale(text: str) -> ScaleChoice:
    try:
        return parse_scale(text)
    except ScaleError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def make_backend(args: argparse.Namespace) -> Backend:
    if args.url:
        return ServerBackend(args.url, args.api_key, args.timeout, args.scale)
    return LocalBackend.load(
        args.model or DEFAULT_MODEL,
        args.providers.split(",") if args.providers else None,
        tile_size=args.tile_size or DEFAULT_TILE_SIZE,
        overlap=DEFAULT_OVERLAP if args.overlap is None else args.overlap,
        batch=args.batch or 0,
        threads=DEFAULT_THREADS if args.threads is None else args.threads,
        scale=args.scale,
        whole_max_pixels=DEFAULT_WHOLE if args.whole_max_pixels is None else args.whole_max_pixels,
        second_pass=args.second_pass is not False,
    )


def plan_jobs(inputs: Sequence[Path], recursive: bool, outdir: Path) -> Plan:
    """Files named on the command line, and the files of named folders (subfolders with `recursive`)."""
    plan = Plan()
    outdir = outdir.resolve()
    for path in inputs:
        if path.is_file():
            files: Iterator[tuple[Path, Path]] = iter([(path, Path(path.name))])
        elif path.is_dir():
            files = _folder_files(path, recursive, outdir)
            if not recursive and _has_subfolders(path, outdir):
                plan.not_walked.append(path)
        else:
            plan.missing.append(path)
            continue
        for file, relative in files:
            if file.suffix.lower() in IMAGE_SUFFIXES:
                plan.jobs.append(Job(file, relative))
            else:
                plan.skipped.append(file)
    return plan


def _folder_files(folder: Path, recursive: bool, outdir: Path) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to `folder`), sorted; hidden entries and the output folder left out."""
    for file in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        if file.resolve().is_relative_to(outdir):  # OUTDIR inside an input folder: not our own outputs
            continue
        yield file, relative


def _has_subfolders(folder: Path, outdir: Path) -> bool:
    return any(
        entry.is_dir() and not entry.name.startswith(".") and not entry.resolve().is_relative_to(outdir)
        for entry in folder.iterdir()
    )


def run_jobs(jobs: Sequence[Job], backend: Backend, args: argparse.Namespace) -> tuple[int, int]:
    """Derain every job; (written, failed). Per-file problems are reported and counted, Fatal stops."""
    inputs = {job.source.resolve() for job in jobs}
    targets: dict[Path, Path] = {}  # output written this run -> its source
    failed = 0
    with tqdm(total=len(jobs), unit="img", file=sys.stderr, disable=args.quiet, dynamic_ncols=True) as bar:
        for job in jobs:
            try:
                content, fmt = derain_file(job.source, backend, args)
                target = args.output / job.relative.with_suffix(suffix_for(job.source, fmt))
                _check_target(target.resolve(), inputs, targets)
                targets[target.resolve()] = job.source
                write_atomically(target, content)
            except (DerainError, FileFailed, OSError) as error:
                failed += 1
                bar.set_postfix(failed=failed)
                tqdm.write(f"derain: error: {job.source}: {error}", file=sys.stderr)
            bar.update()
    return len(jobs) - failed, failed


def derain_file(source: Path, backend: Backend, args: argparse.Namespace) -> tuple[bytes, OutputFormat]:
    """The encoded output (the derained image, or before|after with --compare) and its format."""
    data = source.read_bytes()
    if not args.compare:
        return backend.derain(data, args.format, args.quality)
    original, derained = backend.derain_pixels(data)
    fmt = output_format(original.info, args.format)
    return side_by_side(original, derained, fmt, args.quality), fmt


def side_by_side(
    original: DecodedImage, derained: np.ndarray, fmt: OutputFormat, quality: int | None
) -> bytes:
    """Original on the left, derained (3, H, W) RGB [0, 1] on the right: one image 2 x W wide."""
    info = original.info
    alpha = None if info.alpha is None else np.concatenate([info.alpha, info.alpha], axis=1)
    wide = dataclasses.replace(info, width=2 * info.width, alpha=alpha)
    return encode(np.concatenate([original.rgb, derained], axis=2), wide, fmt, quality)


def suffix_for(source: Path, fmt: OutputFormat) -> str:
    """The source's own extension when it already names `fmt` (".JPEG" stays), else the usual one."""
    suffixes = SUFFIXES[fmt]
    return source.suffix if source.suffix.lower() in suffixes else suffixes[0]


def _check_target(target: Path, inputs: set[Path], targets: dict[Path, Path]) -> None:
    if target in inputs:
        raise FileFailed(f"refusing to overwrite the input {target}; choose another output folder")
    if target in targets:
        raise FileFailed(f"{target} was already written from {targets[target]} in this run")


def write_atomically(target: Path, content: bytes) -> None:
    """Write beside the target, then rename: an interrupted run leaves no half-written image."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    try:
        partial.write_bytes(content)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _say(message: str) -> None:
    tqdm.write(f"derain: {message}", file=sys.stderr)


def _stop(message: str) -> int:
    _say(f"error: {message}")
    return 2
