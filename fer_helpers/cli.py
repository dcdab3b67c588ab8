"""The ``fer-study`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import yaml


def _overrides(pairs: Sequence[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise SystemExit(f"error: --set {p!r}: expected KEY=VALUE, e.g. --set data.per_class=20")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at column {mark.column + 1}" if mark is not None else ""
            raise SystemExit(f"error: --set {p!r}: the value is not valid YAML{where} "
                             f"({getattr(e, 'problem', None) or e}); quote strings, e.g. --set name=\"my run\"") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fer-study", description="Does face restoration rescue facial emotion recognition?")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a parameter set's notebooks with papermill and build the HTML report")
    r.add_argument("params", help="parameter file, e.g. params/default.yaml")
    r.add_argument("--force", action="store_true", help="rerun notebooks even if unchanged since their last run")
    r.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks (e.g. 02_quality_check)")
    r.add_argument("--run-dir", help="output folder (default reports/<name>)")
    r.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override parameters, e.g. data.per_class=20")

    v = sub.add_parser("validate", help="check a parameter file and print the resolved parameters")
    v.add_argument("params")
    v.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")

    sub.add_parser("presets", help="list the degradation presets and groups")
    sub.add_parser("restorers", help="list the restorers (notebook 03) by family")
    sub.add_parser("classifiers", help="list the classifiers (notebooks 04 and 05)")
    sc = sub.add_parser("score", help="score classifiers on the clean faces of any FER2013-style folder (or fer2013.csv)")
    sc.add_argument("--data", required=True, help="folder with <split>/<class>/ images, or fer2013.csv with --csv")
    sc.add_argument("--split", default="test", help="split folder (or CSV Usage) to score; default test")
    sc.add_argument("--csv", action="store_true", help="--data is the original fer2013.csv")
    sc.add_argument("--classifier", nargs="+", default=["cnn"], help="registry names (fer-study classifiers)")
    sc.add_argument("--out", help="output folder (default reports/score-<folder name>)")
    sc.add_argument("--landmarker", help="MediaPipe face_landmarker.task for the landmark models")
    sc.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other parameters, e.g. data.label_map={...}")
    pr = sub.add_parser("predict", help="emotions of the faces in your own photos (files or folders), optionally restored first")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pr.add_argument("--restorer", nargs="+", default=["none"], help="restorers to apply first (fer-study restorers); none = as detected")
    pr.add_argument("--classifier", nargs="+", default=["cnn"], help="classifiers (fer-study classifiers)")
    pr.add_argument("--out", default="predictions", help="output folder (default ./predictions)")
    pr.add_argument("--cropped", action="store_true", help="each image already is one face: no detection")
    pr.add_argument("--landmarker", help="MediaPipe face_landmarker.task, for the landmark classifiers")
    pr.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b = sub.add_parser("badges", help="rewrite the notebooks' Colab badges from pyproject.toml's Repository URL")
    b.add_argument("--check", action="store_true", help="only report notebooks that are out of date (exit 1 if any)")

    a = ap.parse_args(argv)
    from .config import ParamsError, load_params
    from .data import DataError

    try:
        if a.cmd == "run":
            from .runner import NotebookFailed, run_study

            try:
                res = run_study(a.params, force=a.force, only=a.only, run_dir=a.run_dir, overrides=_overrides(a.set))
            except NotebookFailed as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(f"report: {res.index}")
            return 0
        if a.cmd == "validate":
            p = load_params(a.params, _overrides(a.set))
            print(yaml.safe_dump(p.to_dict(), sort_keys=False), end="")
            print(f"# ok: {a.params} (digest {p.digest()})")
            return 0
        if a.cmd == "presets":
            from . import degrade

            print(degrade.preset_table(list(degrade.PRESETS.values())).to_string(index=False))
            print("\ngroups:")
            for g, names in degrade.PRESET_GROUPS.items():
                print(f"  {g}: {', '.join(names)}")
            return 0
        if a.cmd == "restorers":
            from . import restore
            from .registry import doc_line

            for name in restore.available_names():
                cls = restore.REGISTRY[name]  # built-ins and installed plug-ins
                print(f"{name:17s} {cls.family:11s} {doc_line(cls)}")
                options = restore.option_defaults(name)
                if options:
                    print(f"{'':29s} options: {', '.join(f'{k}={v}' for k, v in options.items())}")
            print(f"\nany of them behind the quality gate: <name>{restore.GATE_SUFFIX} (restoration.gate); "
                  "options per restorer: restoration.options, e.g. {nlm: {h_factor: 0.9}, unet: {tta: flip}}")
            return 0
        if a.cmd == "classifiers":
            from . import classify
            from .registry import doc_line

            for name in classify.available_names():
                cls = classify.REGISTRY[name]
                print(f"{name:22s} {cls.family:10s} {classify.card_summary(name):38s} {doc_line(cls)}")
            return 0
        if a.cmd == "score":
            import difflib
            from pathlib import Path

            from . import classify
            from .stages import classification

            for name in a.classifier:
                if not classify.is_known(name):
                    hint = difflib.get_close_matches(name, classify.available_names(), n=1)
                    raise ValueError(f"--classifier {name!r}: unknown" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                     + f"; known: {', '.join(classify.available_names())} (fer-study classifiers lists them)")
            from .config import parse_params
            from .io import RunDir
            from .paths import REPORTS_DIR

            name = "score-" + "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(a.data).resolve().name)
            raw = {"name": name, "data": {"source": "csv" if a.csv else "folder", "path": str(Path(a.data).resolve()),
                                          "eval_split": a.split, "train_split": None, "drop_test_duplicates_of_train": False}}
            if a.landmarker:
                raw["classification"] = {"landmarker": str(Path(a.landmarker).resolve())}
            params = parse_params(raw, source="fer-study score", overrides=_overrides(a.set))
            run = RunDir(a.out or REPORTS_DIR / name)
            run.write_provenance(params)
            metrics, table = classification.score_folder(params, run, a.classifier)
            for _, t in table[~table["available"]].iterrows():
                print(f"unavailable: {t['classifier']}: {t['reason']} ({t['fix']})", file=sys.stderr)
            if len(metrics):
                print(metrics[["classifier", "faces", "accuracy", "macro_f1", "kappa", "no_answer"]].to_string(index=False))
            print(f"metrics: {run.path('classification', 'score_metrics.csv')}")
            return 0 if len(metrics) else 1
        if a.cmd == "predict":
            import difflib
            from pathlib import Path

            from . import classify, predict, restore

            for names, is_known, known, what in ((a.classifier, classify.is_known, classify.available_names(), "--classifier"),
                                                 (a.restorer, restore.is_known, restore.available_names(), "--restorer")):
                for name in names:
                    if not is_known(name.removesuffix(restore.GATE_SUFFIX)):
                        hint = difflib.get_close_matches(name, known, n=1)
                        raise ValueError(f"{what} {name!r}: unknown" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                         + f"; known: {', '.join(sorted(known))}")
            res = predict.run(a.paths, Path(a.out), a.restorer, a.classifier, cropped=a.cropped, device=a.device,
                              landmarker=a.landmarker)
            for u in res.unavailable:
                print(f"unavailable: {u}", file=sys.stderr)
            for path, reason in res.skipped.itertuples(index=False):
                print(f"skipped: {path}: {reason}", file=sys.stderr)
            if len(res.rows):
                view = res.rows[(res.rows["restorer"] == "none")][["file", "face", "classifier", "predicted", "probability"]]
                print(view.to_string(index=False))
            print(f"predictions: {Path(a.out) / 'predictions.csv'} ({len(res.rows)} rows); contact sheets: {Path(a.out) / 'sheets'}")
            return 0 if len(res.rows) else 1
        if a.cmd == "badges":
            from .colab import sync_badges

            stale = sync_badges(check=a.check)
            print(("out of date: " if a.check else "updated: ") + (", ".join(stale) or "none"))
            return 1 if (a.check and stale) else 0
    except (ParamsError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing file, a read-only or full disk, a file where a folder should be
        from .io import describe_os_error

        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # finished stages and notebooks are on disk (files are written atomically): a rerun picks up from there
        print(f"interrupted: fer-study {a.cmd} stopped; nothing half-written was kept, and the same command "
              "resumes from what had finished", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
