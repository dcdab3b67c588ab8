from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_helpers import data, images
from fer_helpers.data import CLASSES, DataError


def faces(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48), dtype=np.uint8)


def write_csv(path, rows):
    pd.DataFrame(rows, columns=["emotion", "pixels", "Usage"]).to_csv(path, index=False)


def test_csv_loader_maps_usage_labels_and_reports_malformed_rows(tmp_path):
    x = faces(4)
    rows = [(3, " ".join(map(str, x[0].ravel())), "Training"),
            (0, " ".join(map(str, x[1].ravel())), "PublicTest"),
            (6, " ".join(map(str, x[2].ravel())), "PublicTest"),
            (2, "1 2 3", "PublicTest"),  # malformed: too few pixels
            (9, " ".join(map(str, x[3].ravel())), "PublicTest")]  # malformed: no such emotion
    f = tmp_path / "fer2013.csv"
    write_csv(f, rows)
    with pytest.warns(UserWarning, match="skipped 2 file"):
        ds = data.load_csv(f, "PublicTest")
    assert ds.ids.tolist() == ["PublicTest/00001", "PublicTest/00002"]
    assert [CLASSES[i] for i in ds.labels] == ["angry", "neutral"]
    np.testing.assert_array_equal(ds.images, x[1:3])
    assert [s[0] for s in ds.skipped] == ["fer2013.csv row 5", "fer2013.csv row 6"]
    with pytest.raises(DataError, match="not a Usage"):
        data.load_csv(f, "test")
    g = tmp_path / "wrong.csv"
    pd.DataFrame({"label": [1], "pixels": ["1"]}).to_csv(g, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['Usage', 'emotion'\]"):
        data.load_csv(g, "PublicTest")


def test_folder_and_csv_forms_give_the_same_faces(tmp_path):
    x = faces(3, seed=5)
    labels = ["happy", "sad", "happy"]
    for i, (img, lab) in enumerate(zip(x, labels)):
        (tmp_path / "kaggle" / "test" / lab).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "kaggle" / "test" / lab / f"PublicTest_{i}.png")
    write_csv(tmp_path / "f.csv", [(CLASSES.index(l), " ".join(map(str, im.ravel())), "PublicTest") for im, l in zip(x, labels)])
    a = data.load_folder(tmp_path / "kaggle", "test")
    b = data.load_csv(tmp_path / "f.csv", "PublicTest")
    order = np.argsort([int(i.split("_")[-1].split(".")[0]) for i in a.ids])
    np.testing.assert_array_equal(a.images[order], b.images)
    np.testing.assert_array_equal(a.labels[order], b.labels)


def test_folder_loader_skips_corrupt_files_by_name_and_converts_other_sizes(tmp_path):
    d = tmp_path / "ds" / "test"
    (d / "Happiness").mkdir(parents=True)
    (d / "AN").mkdir()
    Image.fromarray(np.zeros((60, 100, 3), np.uint8) + 200).save(d / "Happiness" / "big.png")
    Image.fromarray(faces(1)[0]).save(d / "AN" / "a.png")
    (d / "AN" / "broken.jpg").write_bytes(b"not a jpeg")
    (d / "AN" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="skipped 2 file"):
        ds = data.load_folder(tmp_path / "ds", "test", label_map={"AN": "angry"})
    assert sorted(ds.ids) == ["test/AN/a.png", "test/Happiness/big.png"]
    assert ds.images.shape == (2, 48, 48) and ds.images.dtype == np.uint8
    assert {p for p, _ in ds.skipped} == {"test/AN/broken.jpg", "test/AN/notes.txt"}
    assert sorted(CLASSES[i] for i in ds.labels) == ["angry", "happy"]
    with pytest.raises(DataError, match=r"does not name a FER2013 class; add it to data.label_map"):
        data.load_folder(tmp_path / "ds", "test")
    with pytest.raises(DataError, match=r"no split folder .*train \(it has: test\)"):
        data.load_folder(tmp_path / "ds", "train")


def test_to_face48_rule():
    img = Image.fromarray(np.tile(np.linspace(0, 255, 100, dtype=np.uint8), (60, 1)))  # 100 wide, 60 high
    out = images.to_face48(img)
    assert out.shape == (48, 48)
    # the centred square crop keeps columns 20..79 of the ramp: about 51..204 after resizing
    assert 45 < out[:, 0].mean() < 60 and 195 < out[:, -1].mean() < 210


def test_subset_is_seeded_balanced_and_order_independent():
    n = 70
    ds = data.Dataset(np.array([f"id{i:03d}" for i in range(n)]), faces(n), np.arange(n) % 7, "test")
    a = data.subset_per_class(ds, 3, seed=1)
    assert np.bincount(a.labels).tolist() == [3] * 7
    perm = np.random.default_rng(0).permutation(n)
    b = data.subset_per_class(ds.take(perm), 3, seed=1)
    assert a.ids.tolist() == b.ids.tolist()
    assert data.subset_per_class(ds, 3, seed=2).ids.tolist() != a.ids.tolist()
    assert data.subset_per_class(ds, None, seed=1) is ds


def test_audit_finds_duplicates_blank_and_drop_acts_on_it():
    x = faces(6, seed=3)
    x[5] = 17  # blank
    ev = data.Dataset(np.array([f"test/{i}" for i in range(6)]), x, np.array([0, 1, 2, 3, 4, 5]), "test")
    tr_imgs = np.stack([x[1], x[2], x[2], faces(1, seed=9)[0]])
    tr = data.Dataset(np.array(["train/a", "train/b", "train/c", "train/d"]), tr_imgs, np.array([1, 6, 2, 0]), "train")
    au = data.audit(ev, tr, blank_std_max=1.0)
    s = au.summary()
    assert s["eval images also in train"] == 2 and s["... of which with a different label"] == 1
    assert s["blank eval images"] == 1 and au.blank["id"].tolist() == ["test/5"]
    assert au.duplicates_within["id"].tolist() == ["train/b", "train/c"]
    assert au.counts.loc["angry"].tolist() == [1, 1]
    kept, dropped = data.drop_flagged(ev, au, drop_train_duplicates=True, drop_blank=True)
    assert kept.ids.tolist() == ["test/0", "test/3", "test/4"]
    assert set(dropped["id"]) == {"test/1", "test/2", "test/5"}
    kept2, _ = data.drop_flagged(ev, au, drop_train_duplicates=False, drop_blank=False)
    assert len(kept2) == 6


def test_training_data_pack_round_trips_and_never_holds_privatetest(tmp_path, monkeypatch):
    import shutil

    from fer_helpers.paths import SAMPLE_FER2013_DIR

    root = tmp_path / "fer"
    shutil.copytree(SAMPLE_FER2013_DIR, root)
    first = next((root / "test" / "happy").glob("PublicTest_*.jpg"))
    shutil.copy(first, root / "test" / "happy" / "PrivateTest_1.jpg")
    opened = []
    real_open = data.Image.open
    monkeypatch.setattr(data.Image, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    train, val, dropped = data.fer2013_train_val(root)
    assert not any("PrivateTest" in i for i in val.ids)
    assert opened and not any("PrivateTest" in f for f in opened)  # never even opened
    packed = data.pack_train_val(root, tmp_path / "tv.npz")
    train2, val2, dropped2 = data.fer2013_train_val(packed)
    np.testing.assert_array_equal(train2.images, train.images)
    np.testing.assert_array_equal(val2.labels, val.labels)
    assert list(val2.ids) == list(val.ids) and dropped2 == dropped
    (tmp_path / "bad.npz").write_bytes(b"not an array file")
    with pytest.raises(data.DataError, match=r"bad\.npz is not a file written by .*pack it again"):
        data.fer2013_train_val(tmp_path / "bad.npz")


def test_sixteen_bit_grey_faces_are_scaled_by_their_bit_depth_not_clipped():
    ten_bit = (np.arange(48 * 48).reshape(48, 48) % 1024).astype(np.uint16)
    face = images.to_face48(Image.fromarray(ten_bit))
    np.testing.assert_array_equal(face, np.round(ten_bit.astype(np.float64) * 255 / 1023).astype(np.uint8))
    full = (ten_bit.astype(np.uint32) * 64).astype(np.uint16)  # the same face using all 16 bits
    assert np.abs(images.to_face48(Image.fromarray(full)).astype(int) - face).max() <= 1
    assert images.high_bit_depth_to_grey(Image.fromarray(ten_bit))[1] == 10
    assert images.high_bit_depth_to_grey(Image.new("L", (4, 4)))[1] is None


def _faces(names, split="test"):
    n = len(names)
    return data.Dataset(np.array([f"{split}/happy/{x}" for x in names]), np.zeros((n, 48, 48), np.uint8),
                        np.full(n, 3, dtype=np.int64), split)


def test_evaluation_subset_follows_fer2013s_protocol_and_says_what_it_scored():
    both = _faces(["PublicTest_1.jpg", "PrivateTest_2.jpg", "PrivateTest_3.jpg"])
    private, rec = data.select_subset(both, "privatetest", "folder")
    assert [i.split("/")[-1] for i in private.ids] == ["PrivateTest_2.jpg", "PrivateTest_3.jpg"]
    assert rec["scored"] == "privatetest" and not rec["selected_on_these"] and "2 of the 3" in rec["note"]
    public, rec = data.select_subset(both, "publictest", "folder")
    assert len(public) == 1 and rec["selected_on_these"]
    # the development copy holds PublicTest only: everything is scored, and the record says why
    only_public = _faces(["PublicTest_1.jpg", "PublicTest_4.jpg"])
    same, rec = data.select_subset(only_public, "privatetest", "folder")
    assert len(same) == 2 and rec["scored"] == "all" and rec["selected_on_these"]
    assert "no file in test/ is named PrivateTest_*" in rec["note"] and "only the other half" in rec["note"]
    assert "the whole split was scored (2 faces before the audit's drops)" in rec["note"]  # the audit drops some later
    other, rec = data.select_subset(_faces(["a.png"]), "privatetest", "folder")
    assert "do not tell FER2013's halves apart" in rec["note"] and not rec["selected_on_these"]
    csv, rec = data.select_subset(_faces(["0"], split="PrivateTest"), "privatetest", "csv")
    assert len(csv) == 1 and not rec["selected_on_these"] and "Usage" in rec["note"]


def test_no_training_or_tuning_command_reads_the_test_split_except_through_publictest():
    """Every command that trains, tunes, calibrates or selects gets FER2013 through ``fer2013_train_val`` (PublicTest
    files only; the dynamic check above shows PrivateTest_* files are never opened) or reads the train split."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [root / "fer_helpers" / f"{m}.py" for m in ("cnn", "vit", "landmarks", "transfer", "ensemble", "unet")]
    sources += sorted((root / "scripts").glob("*.py"))
    # notebook 03's optional U-Net training reads the run's own evaluation split, only to drop its faces from training
    allowed = {("unet.py", "train_for_run")}
    bad = []
    for path in sources:
        tree = ast.parse(path.read_text())
        owner = {}  # node -> the innermost function around it
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef):
                for node in ast.walk(fn):
                    owner[node] = fn.name  # inner functions are walked later and overwrite
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("load_folder", "load_split")):
                continue
            name = owner.get(call, "<module>")
            split = call.args[1] if call.func.attr == "load_folder" and len(call.args) > 1 else None
            reads_train = isinstance(split, ast.Constant) and split.value == "train"
            if not reads_train and (path.name, name) not in allowed:
                bad.append(f"{path.name}:{call.lineno} ({name})")
    assert not bad, f"these read an evaluation split directly (use data.fer2013_train_val): {sorted(set(bad))}"


def test_no_faces_left_names_the_dropped_files_and_why():
    dropped = pd.DataFrame({"id": ["test/happy/a.png", "test/sad/b.png"], "reason": ["blank", "also in train; blank"]})
    msg = data.no_faces_left(2, dropped, Path("/d"), "test")
    assert msg.startswith("no test images left from /d: all 2 were dropped by the audit: test/happy/a.png (blank); "
                          "test/sad/b.png (also in train; blank); keep them with data.drop_blank=false")
