#!/usr/bin/env python3
"""Reading a COCO annotation file: GAP's streamed reader against ``json.load``, time and peak memory.

Writes a synthetic ``instances_*.json`` of about ``--mb`` megabytes (COCO's shape: images, then
annotations with polygon segmentations, then categories), then reads it with
:func:`gap.services.image_import.read_coco` and with ``json.load``, each in a fresh process, and
prints seconds and peak resident memory (``ru_maxrss``) of each. train2017's file is ~450 MB.

    python benchmarks/bench_import_coco.py --mb 100
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_file(path: Path, megabytes: float) -> int:
    """A COCO-shaped file of about ``megabytes`` MB; returns its image count."""
    rng = random.Random(0)
    target = int(megabytes * 1e6)
    images = max(10, target // 12_000)  # ~7 annotations of ~1.7 kB per image, as in train2017
    with path.open("w") as out:
        out.write('{"info": {"year": 2017}, "licenses": [], "images": [')
        out.write(
            ",".join(
                json.dumps({"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
                for i in range(images)
            )
        )
        out.write('], "annotations": [')
        first = True
        written, n = 0, 0
        while written < target:
            polygon = [round(rng.uniform(0, 640), 2) for _ in range(200)]
            item = json.dumps(
                {
                    "id": n,
                    "image_id": rng.randrange(images),
                    "category_id": rng.randrange(1, 91),
                    "segmentation": [polygon],
                    "area": 1000.0,
                    "bbox": [1.0, 2.0, 3.0, 4.0],
                    "iscrowd": 0,
                }
            )
            out.write(("" if first else ",") + item)
            first, written, n = False, written + len(item), n + 1
        out.write(
            '], "categories": ['
            + ",".join(json.dumps({"id": c, "name": f"c{c}"}) for c in range(1, 91))
            + "]}"
        )
    return images


def measure(path: Path, how: str) -> None:
    """Child process: read ``path`` one way; print seconds and peak RSS (MB) as JSON."""
    started = time.perf_counter()
    with path.open(encoding="utf-8") as stream:
        if how == "stream":
            from gap.services.image_import import read_coco

            images, _ = read_coco(stream)
            count = len(images)
        else:
            count = len(json.load(stream)["images"])
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"how": how, "images": count, "seconds": seconds, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="Size of the synthetic file, in MB.")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(Path(args.child[0]), args.child[1])
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "instances_bench.json"
        images = write_file(path, args.mb)
        size = path.stat().st_size / 1e6
        print(f"{path.name}: {size:.0f} MB, {images} images")
        for how in ("stream", "json.load"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), how],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out)
            rate = size / result["seconds"]
            print(
                f"{how:>9}: {result['seconds']:6.1f} s, peak RSS {result['peak_mb']:.0f} MB ({rate:.0f} MB/s)"
            )


if __name__ == "__main__":
    main()
