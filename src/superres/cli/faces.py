"""``superres faces``: detect and align the faces of images (restore them with --face-model), save the crops
and a JSON of boxes and landmarks per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from superres.cli.common import (
    add_runtime_arguments,
    claim_outputs,
    collect_inputs,
    make_out_dir,
    max_pixels_argument,
    read_integer,
    remove_stale_temps,
    run_batch,
)
from superres.errors import SuperresError


def cmd_faces(args: argparse.Namespace) -> int:
    from superres.faces import FaceDetector, FaceOptions, FaceRestorer

    options = FaceOptions(min_size=args.min_size)  # checked before any file is looked at
    if not args.face_model and not 16 <= args.size <= 4096:
        raise SuperresError(f"--size must be between 16 and 4096 pixels, got {args.size}")
    items, skipped = collect_inputs(args.inputs, args.recursive, args.quiet, output=args.output)
    targets = [args.output / rel.parent / f"{rel.stem}.json" for _, rel in items]
    claim_outputs([(src, target) for (src, _), target in zip(items, targets, strict=True)],
                  same_folder_advice="rename one of them (NAME.json and NAME_faceNN.png take the image's name "
                  "without its extension)")
    remove_stale_temps(targets)  # what a killed run left
    inputs = {_inode(src) for src, _ in items}  # no crop may replace one of them
    jobs = []
    for (src, rel), target in zip(items, targets, strict=True):
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        jobs.append((src, rel, target))
    if not jobs:
        if not args.quiet:
            print(f"0 done, {skipped} skipped (their JSON exists; --overwrite to redo), 0 failed", file=sys.stderr)
        return 0
    make_out_dir(args.output)
    if args.face_model:
        from superres.cli.common import run_options

        restorer = FaceRestorer(args.face_model, options, run_options(args))
        size, detect = restorer.size, restorer.detect
    else:
        restorer, size = None, args.size
        detector = FaceDetector()

        def detect(image):
            from superres.faces.restore import rgb8

            return [f for f in detector(rgb8(image)) if f.size >= options.min_size]

    found = 0

    def work(job: tuple[Path, Path, Path]) -> None:
        nonlocal found
        found += _faces_one(*job, detect, restorer, size, args, inputs)

    done, failed = run_batch(jobs, work, quiet=True, name=lambda job: job[0])
    if not args.quiet:
        print(f"{done} done ({found} faces), {skipped} skipped, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _faces_one(src: Path, rel: Path, target: Path, detect, restorer, size: int, args: argparse.Namespace,
               inputs: set) -> int:
    import numpy as np

    from superres.faces import crop_faces
    from superres.io import ImageInfo, atomic_write, write_image

    img, info = read_integer(src, args.max_pixels)  # the file's own samples: 16-bit crops stay 16-bit
    faces = detect(img)
    names = [f"{rel.stem}_face{i:02d}.png" for i in range(len(faces))]
    for name in names:  # checked before any crop is written
        if (inode := _inode(target.parent / name)) is not None and inode in inputs:
            raise SuperresError(f"{src}: its crop {target.parent / name} would overwrite that input; choose "
                                "another output folder")
    crops, matrices = crop_faces(img[..., :3], faces, size)
    if restorer is not None and crops:
        crops = restorer.restore(crops)
    make_out_dir(target.parent)
    records = []
    for name, face, crop, matrix in zip(names, faces, crops, matrices, strict=True):
        write_image(target.parent / name, crop, ImageInfo(bit_depth=info.bit_depth))  # 16-bit crops stay 16-bit
        records.append({**face.to_json(), "crop": name, "matrix": np.round(matrix, 6).tolist()})
    doc = {"image": str(src), "width": img.shape[1], "height": img.shape[0], "crop_size": size,
           "restored": restorer is not None, "faces": records}
    atomic_write(target, (json.dumps(doc, indent=1) + "\n").encode())
    if not args.quiet:
        print(f"{src}: {len(faces)} face{'s' if len(faces) != 1 else ''} -> {target}", file=sys.stderr)
    return len(faces)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faces", help="detect and align faces (restore them with --face-model); save crops and JSON",
                       description="Find the faces of images with MTCNN (five landmarks), align each to the FFHQ "
                       "template and save it as NAME_faceNN.png (restored by --face-model if given), with NAME.json "
                       "listing each face's box, landmarks, score, crop and the 2x3 matrix from the image to the "
                       "crop. Images whose JSON exists are skipped unless --overwrite.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or globs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    p.add_argument("--face-model", metavar="PATH", help="restore the crops with this face network")
    p.add_argument("--size", type=int, default=512, help="crop size without --face-model (default 512)")
    p.add_argument("--min-size", type=float, default=32, metavar="N",
                   help="faces whose box is smaller than N pixels are left out (default 32)")
    max_pixels_argument(p)
    add_runtime_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="redo images whose JSON exists")
    p.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_faces)

