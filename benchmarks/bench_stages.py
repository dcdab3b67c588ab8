"""Stages 01+02 at the machine's pace: the project's library against a per-image loop, whole processes.

    python benchmarks/bench_stages.py [--repeat 3] [--split test]

The work, as a user pays for it (a fresh interpreter, its imports, the files on disk): read every JPEG of the
split, apply seed 000's chain (Gaussian noise sigma 15, blur 1.5, JPEG quality 20) and measure the quality of
each degraded face. Three whole processes, each best of ``--repeat`` runs, side by side:

- ``library``: ``data.load_folder`` + ``degrade.apply_preset`` + ``quality.measure`` (what notebooks 01 and 02 do);
- ``per-image loop``: seed 000's style, one face at a time (PIL open, noise, blur, JPEG through a buffer, two
  PNGs written and read back, Laplacian variance, noise estimate, mean/std);
- ``floor``: interpreter start, the imports the work needs, and decoding the JPEGs: what no implementation avoids.

Prints seconds and the ratios the speed issue asks for (library vs loop >= 5x; library within 2x of the floor).
Run it on an otherwise idle machine (pause any training with SIGSTOP): other processes distort every ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LIBRARY = textwrap.dedent("""
    import sys
    from fer_helpers import data, degrade, quality
    ds = data.load_folder(sys.argv[1], sys.argv[2])
    deg = degrade.apply_preset(ds.images, ds.ids, degrade.PRESETS["seed000_chain"], 0)
    q = quality.measure(deg)
    print(len(q), float(q["laplacian_var"].median()))
""")

LOOP = textwrap.dedent("""
    import io, sys, tempfile
    from pathlib import Path
    import numpy as np
    from PIL import Image, ImageFilter
    from scipy import ndimage
    from skimage.restoration import estimate_sigma
    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, f in enumerate(sorted(Path(sys.argv[1], sys.argv[2]).glob("*/*"))):
            face = np.asarray(Image.open(f).convert("L"), dtype=np.float64)
            noisy = np.clip(face + rng.normal(0, 15, face.shape), 0, 255).astype(np.uint8)
            blurred = Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(1.5))
            buf = io.BytesIO()
            blurred.save(buf, format="JPEG", quality=20)
            degraded = Image.open(io.BytesIO(buf.getvalue())).convert("L")
            Image.fromarray(face.astype(np.uint8)).save(f"{tmp}/clean_{k}.png")
            degraded.save(f"{tmp}/degraded_{k}.png")
            d = np.asarray(Image.open(f"{tmp}/degraded_{k}.png"), dtype=np.float64)
            lap = ndimage.laplace(d).var()
            sigma = estimate_sigma(d / 255.0) * 255.0
            out.append((lap, sigma, d.mean() / max(d.std(), 1e-9)))
    print(len(out), float(np.median([o[0] for o in out])))
""")

FLOOR = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np, pandas, scipy.ndimage, skimage.restoration  # what the work imports
    from PIL import Image
    faces = [np.asarray(Image.open(f).convert("L")) for f in sorted(Path(sys.argv[1], sys.argv[2]).glob("*/*"))]
    print(len(faces))
""")


def run(code: str, folder: str, split: str) -> tuple[float, str]:
    os.sync()  # the loop's previous run left thousands of PNGs to write back: each run starts with a clean disk
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, folder, split], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode:
        raise SystemExit(f"benchmark process failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t, r.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    from fer_helpers.paths import SAMPLE_FER2013_DIR, SHARED_FER2013_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("FER2013_DIR") or (SHARED_FER2013_DIR if SHARED_FER2013_DIR.is_dir() else SAMPLE_FER2013_DIR))
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    n = sum(1 for _ in Path(a.data, a.split).glob("*/*"))
    print(f"{n:,} images in {a.data}/{a.split}; whole processes, best of {a.repeat}; {os.cpu_count()} CPUs\n")
    best = {}
    for name, code in (("floor", FLOOR), ("library", LIBRARY), ("per-image loop", LOOP)):
        times = [run(code, str(a.data), a.split)[0] for _ in range(a.repeat)]
        best[name] = min(times)
        print(f"{name:16s} {best[name]:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"\nlibrary vs per-image loop: {best['per-image loop'] / best['library']:.2f}x faster (goal >= 5x)")
    print(f"library vs floor:          {best['library'] / best['floor']:.2f}x the floor (goal <= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
