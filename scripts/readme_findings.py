"""Rewrite the README's "What the study found" block from a finished run folder (nothing typed by hand).

    python scripts/readme_findings.py reports/fer2013

The block lies between the markers ``<!-- findings:start -->`` and ``<!-- findings:end -->``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_helpers.stages.findings import readme_section
from fer_helpers.io import RunDir

START, END = "<!-- findings:start -->", "<!-- findings:end -->"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a run folder whose notebook 06 has finished (statistics/findings.json)")
    ap.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    a = ap.parse_args(argv)
    if not (a.run_dir / "statistics" / "findings.json").is_file():
        print(f"error: {a.run_dir}/statistics/findings.json is missing: run the study there first "
              "(fer-study run PARAMS), then this script", file=sys.stderr)
        return 2
    text = a.readme.read_text()
    if START not in text or END not in text:
        print(f"error: {a.readme} has no {START} ... {END} block to rewrite", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    a.readme.write_text(f"{head}{START}\n{readme_section(RunDir(a.run_dir))}\n{END}{tail}")
    print(f"{a.readme}: findings block rewritten from {a.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
