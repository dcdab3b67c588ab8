"""Run a corpus of bad inputs and faults against the ``fer-study`` command and print what each gave.

    python scripts/bad_inputs.py                 # every case (about 5 minutes on 2 cores)
    python scripts/bad_inputs.py -k csv weights  # the cases whose name contains any of these words

Each case builds its own small files in a temporary folder (real faces from the bundled sample), runs the
CLI in a fresh process, and gets a verdict:

- ``clear``: an expected refusal, one line starting ``error:`` (or ``unavailable:``) that names the thing
  (file, key, model) the case is about;
- ``correct``: an input the study should accept, accepted, with the result checked;
- ``TRACEBACK``, ``SILENT`` (a bad input accepted without a word), ``VAGUE`` (an error that names neither
  the thing nor the fix), ``WRONG`` (accepted but the result is wrong): the failures.

Exit status 1 when any case fails. Cases that need another user (read-only folders: root can write
anywhere) run the command as ``nobody`` through ``setpriv`` and are skipped where that is impossible.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_helpers.paths import MODELS_DIR, SAMPLE_FER2013_DIR, SHARED_DIR  # noqa: E402

TASK = SHARED_DIR / "models" / "face_landmarker.task"
CNN = MODELS_DIR / "cnn" / "cnn.safetensors"


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # the CLI arguments, given the case's folder
    expect: str  # "error" or "ok"
    names: Callable[[Path], list[str]] = lambda t: []  # what an error (or unavailable line) must name
    setup: Callable[[Path], None] = lambda t: None
    check: Callable[[Path, str, str], str | None] = lambda t, out, err: None  # for "ok": what is wrong, or None
    user: str | None = None  # run as this user (read-only folders)
    fsize: int | None = None  # RLIMIT_FSIZE in bytes: a disk that fills up
    interrupt_after: float | None = None  # send SIGINT after this many seconds
    env: dict[str, str] = field(default_factory=dict)


# ---- small files the cases build ---------------------------------------------------------------


def sample(t: Path, name: str = "data", per_class: int = 2) -> Path:
    """A FER2013-style folder with a few real test faces per class."""
    root = t / name
    for d in sorted((SAMPLE_FER2013_DIR / "test").iterdir()):
        (root / "test" / d.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(d.iterdir())[:per_class]:
            shutil.copy(f, root / "test" / d.name / f.name)
    return root


def a_face(t: Path) -> Path:
    return next((t / "data" / "test" / "happy").iterdir())


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def truncated(src: Path, dst: Path) -> Path:
    return write(dst, src.read_bytes()[: src.stat().st_size // 2])


def png16(t: Path) -> None:
    """A real face stored as 16-bit greyscale (values up to 65535), as scanners and some data sets write."""
    sample(t)
    face = np.asarray(Image.open(a_face(t)).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(face).save(t / "data" / "test" / "happy" / "deep16.png")


def all_blank(t: Path) -> None:
    for c in ("happy", "sad"):
        Image.fromarray(np.full((48, 48), 128, np.uint8)).save(write(t / "data" / "test" / c / "x.png", b""))


def csv_file(t: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> None:
    write(t / "fer.csv", "\n".join([header, *rows]) + "\n")


def pixels() -> str:
    """A real face as fer2013.csv writes it (2,304 grey levels separated by spaces)."""
    face = next((SAMPLE_FER2013_DIR / "test" / "happy").iterdir())
    return " ".join(map(str, np.asarray(Image.open(face).convert("L")).ravel()))


PIX = pixels()


def params(t: Path, text: str) -> Path:
    return write(t / "p.yaml", text)


def score(t: Path, *extra: str, data: str = "data") -> list[str]:
    return ["score", "--data", str(t / data), "--out", str(t / "out"), *extra]


def scored_faces(t: Path, classifier: str = "cnn") -> int | None:
    import pandas as pd

    f = t / "out" / "classification" / "score_metrics.csv"
    if not f.is_file():
        return None
    m = pd.read_csv(f)
    m = m[m["classifier"] == classifier]
    return int(m["faces"].iloc[0]) if len(m) else None


def expect_faces(n: int, classifier: str = "cnn") -> Callable[[Path, str, str], str | None]:
    def check(t: Path, out: str, err: str) -> str | None:
        got = scored_faces(t, classifier)
        return None if got == n else f"{classifier} scored {got} faces, expected {n}"
    return check


def skipped_named(fname: str, faces: int) -> Callable[[Path, str, str], str | None]:
    """Scored the readable faces, and the unreadable file is listed (by name) among the skipped ones."""
    def check(t: Path, out: str, err: str) -> str | None:
        got = scored_faces(t)
        listed = (t / "out" / "data" / "skipped_files.csv")
        named = listed.is_file() and fname in listed.read_text()
        if got != faces:
            return f"scored {got} faces, expected {faces}"
        return None if named else f"{fname} is not listed in data/skipped_files.csv"
    return check


def unavailable_but_others_scored(bad: str, good: str) -> Callable[[Path, str, str], str | None]:
    def check(t: Path, out: str, err: str) -> str | None:
        line = next((x for x in err.splitlines() if x.startswith(f"unavailable: {bad}:")), "")
        if not line:
            return f"no 'unavailable: {bad}:' line"
        if scored_faces(t, good) is None:
            return f"{good} was not scored"
        return None
    return check


# ---- the corpus -----------------------------------------------------------------------------------


def corpus() -> list[Case]:
    v = lambda t: ["validate", str(t / "p.yaml")]  # noqa: E731
    gcn = MODELS_DIR / "landmarks" / "landmark_gcn.safetensors"
    unet = MODELS_DIR / "unet_denoiser" / "blind.safetensors"
    lm = ["--landmarker", str(TASK)]
    return [
        # parameter files
        Case("params: file missing", lambda t: ["validate", str(t / "nope.yaml")], "error", lambda t: ["nope.yaml"]),
        Case("params: empty file", v, "error", lambda t: ["p.yaml", "empty"], lambda t: params(t, "")),
        Case("params: malformed YAML", v, "error", lambda t: ["p.yaml", "line 3, column 5"], lambda t: params(t, "data: [1,\n  2\nseed: 0\n")),
        Case("params: not UTF-8", v, "error", lambda t: ["p.yaml", "UTF-8"], lambda t: write(t / "p.yaml", b"name: caf\xe9\n")),
        Case("params: unknown top-level key", v, "error", lambda t: ["sed", "seed"], lambda t: params(t, "sed: 1\n")),
        Case("params: unknown nested key", v, "error", lambda t: ["per_clas", "per_class"], lambda t: params(t, "data:\n  per_clas: 3\n")),
        Case("params: text for a count", v, "error", lambda t: ["data.per_class"], lambda t: params(t, "data:\n  per_class: abc\n")),
        Case("params: yes for a count", v, "error", lambda t: ["data.per_class", "yes/no"], lambda t: params(t, "data:\n  per_class: yes\n")),
        Case("params: empty value", v, "error", lambda t: ["per_class", "no value"], lambda t: params(t, "data:\n  per_class:\n")),
        Case("params: duplicated key", v, "error", lambda t: ["duplicated", "seed"], lambda t: params(t, "seed: 1\nseed: 2\n")),
        Case("params: negative count", v, "error", lambda t: ["data.per_class"], lambda t: params(t, "data:\n  per_class: -3\n")),
        Case("params: text for the seed", v, "error", lambda t: ["seed"], lambda t: params(t, "seed: abc\n")),
        Case("params: unknown preset", v, "error", lambda t: ["noise_99"], lambda t: params(t, "degradation:\n  presets: [noise_99]\n")),
        Case("params: unknown restorer", v, "error", lambda t: ["medain", "median"], lambda t: params(t, "restoration:\n  restorers: [none, medain]\n")),
        Case("params: unknown classifier", v, "error", lambda t: ["cnnn"], lambda t: params(t, "classification:\n  baselines: [cnnn]\n")),
        Case("params: weights-map typo", v, "error", lambda t: ["cnnn", "cnn"], lambda t: params(t, "classification:\n  weights:\n    cnnn: x.safetensors\n")),
        Case("params: showcase preset not scored", v, "error", lambda t: ["showcase_preset", "jpeg_5"],
             lambda t: params(t, "degradation:\n  presets: [noise_25]\nstatistics:\n  showcase_preset: jpeg_5\n")),
        Case("params: unset ${FER2013_DIR}", lambda t: ["run", "params/fer2013.yaml", "--run-dir", str(t / "r")], "error",
             lambda t: ["FER2013_DIR"], env={"FER2013_DIR": ""}),
        Case("params: data folder missing", lambda t: ["run", "params/default.yaml", "--run-dir", str(t / "r"), "--set", f"data.path={t}/none"],
             "error", lambda t: [f"{t}/none"]),
        Case("--set: malformed YAML", lambda t: ["validate", "params/default.yaml", "--set", "data.per_class=[1"], "error", lambda t: ["--set", "data.per_class"]),
        Case("--set: no '='", lambda t: ["validate", "params/default.yaml", "--set", "seed"], "error", lambda t: ["KEY=VALUE"]),
        Case("--set: unknown key", lambda t: ["validate", "params/default.yaml", "--set", "data.per_clas=3"], "error", lambda t: ["per_clas", "per_class"]),
        Case("--only: unknown notebook", lambda t: ["run", "params/default.yaml", "--run-dir", str(t / "r"), "--only", "07_nothing"], "error",
             lambda t: ["07_nothing"]),
        Case("params: a valid set (control)", lambda t: ["validate", "params/default.yaml"], "ok",
             check=lambda t, out, err: None if "name: default" in out else "resolved parameters not printed"),
        # images and data folders
        Case("data: folder missing", lambda t: score(t, data="nowhere"), "error", lambda t: [f"{t}/nowhere"]),
        Case("data: no test split", lambda t: score(t), "error", lambda t: [f"{t}/data/test"], lambda t: (t / "data" / "train" / "happy").mkdir(parents=True)),
        Case("data: a text file named .jpg", lambda t: score(t), "ok",
             setup=lambda t: (sample(t), write(t / "data" / "test" / "sad" / "notes.jpg", "not an image")),
             check=skipped_named("notes.jpg", 14)),
        Case("data: a truncated JPEG", lambda t: score(t), "ok",
             setup=lambda t: (sample(t), truncated(a_face(t), t / "data" / "test" / "sad" / "cut.jpg")),
             check=skipped_named("cut.jpg", 14)),
        Case("data: a zero-byte image", lambda t: score(t), "ok",
             setup=lambda t: (sample(t), write(t / "data" / "test" / "sad" / "empty.png", b"")),
             check=skipped_named("empty.png", 14)),
        Case("data: a 16-bit PNG face", lambda t: score(t), "ok", setup=png16, check=expect_faces(15)),
        Case("data: a colour image", lambda t: score(t), "ok",
             setup=lambda t: (sample(t), Image.open(a_face(t)).convert("RGB").resize((96, 96)).save(t / "data" / "test" / "fear" / "rgb.png")),
             check=expect_faces(15)),
        Case("data: only blank faces", lambda t: score(t), "error", lambda t: ["blank", "x.png"], all_blank),
        Case("data: a class folder with a typo", lambda t: score(t), "error", lambda t: ["happpy"],
             lambda t: (sample(t), shutil.move(t / "data" / "test" / "happy", t / "data" / "test" / "happpy"))),
        Case("csv: a column missing", lambda t: ["score", "--csv", "--data", str(t / "fer.csv"), "--split", "PublicTest", "--out", str(t / "out")],
             "error", lambda t: ["fer.csv", "Usage"], lambda t: csv_file(t, [f"3,{PIX}"], header="emotion,pixels")),
        Case("csv: a row with too few pixels", lambda t: ["score", "--csv", "--data", str(t / "fer.csv"), "--split", "PublicTest", "--out", str(t / "out")],
             "ok", setup=lambda t: csv_file(t, [f"3,{PIX},PublicTest", "4,1 2 3,PublicTest", f"5,{PIX},PublicTest"]),
             check=lambda t, out, err: expect_faces(2)(t, out, err) or (None if "fer.csv row 3" in (t / "out" / "data" / "skipped_files.csv").read_text()
                                                                       else "the short row is not listed as skipped")),
        Case("csv: a CSV given as a folder", lambda t: score(t, data="fer.csv"), "error", lambda t: ["fer.csv"], lambda t: csv_file(t, [f"3,{PIX},PublicTest"])),
        # classifiers and weights
        Case("score: unknown classifier", lambda t: score(t, "--classifier", "nosuch"), "error", lambda t: ["nosuch"], sample),
        Case("weights: truncated CNN file", lambda t: score(t, "--classifier", "cnn", "landmark_mlp", *lm, "--set", f"classification.weights={{cnn: {t}/w.safetensors}}"),
             "ok", setup=lambda t: (sample(t), truncated(CNN, t / "w.safetensors")), check=unavailable_but_others_scored("cnn", "landmark_mlp")),
        Case("weights: another model's file as the CNN", lambda t: score(t, "--classifier", "cnn", "landmark_mlp", *lm, "--set", f"classification.weights={{cnn: {unet}}}"),
             "ok", setup=sample, check=unavailable_but_others_scored("cnn", "landmark_mlp")),
        Case("weights: the GCN's file as landmark_mlp", lambda t: score(t, "--classifier", "landmark_mlp", "cnn", *lm, "--set", f"classification.weights={{landmark_mlp: {gcn}}}"),
             "ok", setup=sample, check=unavailable_but_others_scored("landmark_mlp", "cnn")),
        Case("weights: a corrupt MediaPipe bundle", lambda t: score(t, "--classifier", "landmark_mlp", "cnn", "--landmarker", str(t / "x.task")),
             "ok", setup=lambda t: (sample(t), write(t / "x.task", b"not a bundle" * 100)), check=unavailable_but_others_scored("landmark_mlp", "cnn")),
        Case("weights: a ViT folder without config.json", lambda t: score(t, "--classifier", "vit_fer2013", "cnn", "--set", f"classification.weights={{vit_fer2013: {t}/vit}}"),
             "ok", setup=lambda t: (sample(t), (t / "vit").mkdir()), check=unavailable_but_others_scored("vit_fer2013", "cnn")),
        Case("weights: a truncated ViT model file", lambda t: score(t, "--classifier", "vit_fer2013", "cnn", "--set", f"classification.weights={{vit_fer2013: {t}/vit}}"),
             "ok", setup=lambda t: (sample(t), shutil.copytree(MODELS_DIR / "vit_fer2013", t / "vit"),
                                    truncated(MODELS_DIR / "vit_fer2013" / "model.safetensors", t / "vit" / "model.safetensors")),
             check=unavailable_but_others_scored("vit_fer2013", "cnn")),
        Case("score: a small folder (control)", lambda t: score(t), "ok", setup=sample, check=expect_faces(14)),
        # predict
        Case("predict: path missing", lambda t: ["predict", str(t / "none.jpg"), "--out", str(t / "pred")], "error", lambda t: ["none.jpg"]),
        Case("predict: not an image", lambda t: ["predict", str(t / "x.jpg"), "--cropped", "--out", str(t / "pred")], "error", lambda t: ["x.jpg"],
             lambda t: write(t / "x.jpg", "text")),
        Case("predict: unknown restorer", lambda t: ["predict", str(t), "--restorer", "medain", "--out", str(t / "pred")], "error", lambda t: ["medain", "median"]),
        Case("predict: one cropped face (control)", lambda t: ["predict", str(a_face(t)), "--cropped", "--out", str(t / "pred")], "ok", setup=sample,
             check=lambda t, out, err: None if (t / "pred" / "predictions.csv").is_file() else "no predictions.csv"),
        # the filesystem
        Case("fs: run folder is an existing file", lambda t: ["run", "params/default.yaml", "--run-dir", str(t / "afile")], "error",
             lambda t: [f"{t}/afile"], lambda t: write(t / "afile", "x")),
        Case("fs: a file in the run folder's path", lambda t: ["run", "params/default.yaml", "--run-dir", str(t / "afile" / "sub")], "error",
             lambda t: [f"{t}/afile"], lambda t: write(t / "afile", "x")),
        Case("fs: read-only run folder", lambda t: ["run", "params/default.yaml", "--run-dir", str(t / "ro" / "run")], "error",
             lambda t: [f"{t}/ro", "ermission"], lambda t: (t / "ro").mkdir(mode=0o755), user="nobody"),
        Case("fs: read-only --out", lambda t: score(t) [:-1] + [str(t / "ro" / "out")], "error", lambda t: [f"{t}/ro", "ermission"],
             lambda t: (sample(t), (t / "ro").mkdir(mode=0o755)), user="nobody"),
        Case("fs: the disk fills up", lambda t: score(t), "error", lambda t: [f"{t}/out", "large"], sample, fsize=20_000),
        Case("ctrl-c during a run", lambda t: ["run", "params/default.yaml", "--run-dir", str(t / "r")], "error", lambda t: ["interrupted", "resumes"],
             interrupt_after=8.0),
    ]


# ---- running a case ----------------------------------------------------------------------------------


def _as_user(user: str) -> list[str] | None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    import pwd

    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


def run_case(case: Case, t: Path) -> dict:
    case.setup(t)
    cmd = [sys.executable, "-m", "fer_helpers.cli", *case.argv(t)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **case.env}
    env = {k: v for k, v in env.items() if v != ""}
    if case.user:
        prefix = _as_user(case.user)
        if prefix is None:
            return {"case": case.name, "rc": "", "message": "needs root and setpriv to run as another user", "verdict": "skipped"}
        os.chmod(t, 0o755)
        env["HOME"] = str(t)
        cmd = prefix + cmd

    def limits() -> None:
        if case.fsize:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limits,
                            start_new_session=True)
    if case.interrupt_after:
        time.sleep(case.interrupt_after)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole process group
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return {"case": case.name, "rc": proc.returncode, **judge(case, t, proc.returncode, out, err)}


def judge(case: Case, t: Path, rc: int, out: str, err: str) -> dict:
    lines = [x for x in err.splitlines() if x.strip()]
    first = next((x for x in lines if x.startswith(("error:", "interrupted:", "unavailable:"))), lines[-1] if lines else out.strip()[:120])
    if "Traceback (most recent call last)" in out + err:
        return {"message": first, "verdict": "TRACEBACK"}
    if case.expect == "error":
        if rc == 0:
            return {"message": first, "verdict": "SILENT"}
        missing = [n for n in case.names(t) if n not in first]
        return {"message": first, "verdict": "VAGUE (does not name " + ", ".join(missing) + ")" if missing else "clear"}
    if rc != 0:
        return {"message": first, "verdict": "WRONG (refused a valid input)"}
    problem = case.check(t, out, err)
    said = next((x for x in lines if x.startswith(("unavailable:", "skipped", "warning"))), "(ok)")  # not a progress bar
    return {"message": said, "verdict": f"WRONG ({problem})" if problem else "correct"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", nargs="+", default=[], help="run only cases whose name contains one of these words")
    a = ap.parse_args(argv)
    cases = [c for c in corpus() if not a.k or any(k in c.name for k in a.k)]
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="bad-input-") as d:
            row = run_case(case, Path(d))
        msg = row["message"].replace(d, "<tmp>")
        rows.append(row | {"message": msg if len(msg) <= 150 else msg[:147] + "..."})
        print(f"{row['verdict']:10.10s} rc={row['rc']!s:4s} {case.name}", file=sys.stderr, flush=True)
    print("\n| case | exit | first line of the message | verdict |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['rc']} | {r['message'].replace('|', '/')} | {r['verdict']} |")
    bad = [r for r in rows if r["verdict"] not in ("clear", "correct", "skipped")]
    counts = {v: sum(r["verdict"].split(" ")[0] == v for r in rows) for v in ("clear", "correct", "skipped", "TRACEBACK", "SILENT", "VAGUE", "WRONG")}
    print("\n" + ", ".join(f"{k}: {n}" for k, n in counts.items()) + f" ({len(rows)} cases)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
