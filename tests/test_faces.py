"""Faces in ordinary photographs: detection, the FER2013-like crop, and `fer-study predict` end to end."""

import numpy as np
import pytest
from PIL import Image

from fer_helpers import faces, predict
from fer_helpers.data import CLASSES

pytest.importorskip("facenet_pytorch")


def _photo(sample_faces, where, size=(420, 300), scale=120):
    """FER2013 faces pasted (enlarged) into a larger picture: a 'photo' whose true crops are known."""
    canvas = Image.new("RGB", size, (190, 180, 170))
    for k, (x, y) in enumerate(where):
        canvas.paste(Image.fromarray(sample_faces.images[k]).convert("RGB").resize((scale, scale), Image.Resampling.BICUBIC), (x, y))
    return canvas


@pytest.mark.slow
def test_detection_recovers_pasted_fer_faces_with_their_framing(sample_faces):
    photo = _photo(sample_faces, [(40, 80), (250, 90)])
    found, crops = faces.faces_in(photo)
    assert len(found) == 2 and crops.shape == (2, 48, 48) and crops.dtype == np.uint8
    # one FER2013 face per picture, pasted at a known square: the crop square should cover it (FER2013's own framing
    # varies from face to face, and MTCNN misses some of its faces: 48 of the 56 sample faces are found)
    ious = []
    for k in range(12):
        found = faces.detect(_photo(sample_faces.take(np.arange(k, k + 1)), [(90, 70)]))
        if found:
            x0, y0, x1, y1 = found[0].box
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, faces.CROP_SCALE * max(x1 - x0, y1 - y0) / 2
            iw = max(0.0, min(cx + half, 210) - max(cx - half, 90))
            ih = max(0.0, min(cy + half, 190) - max(cy - half, 70))
            ious.append(iw * ih / ((2 * half) ** 2 + 120 * 120 - iw * ih))
    assert len(ious) >= 8 and np.median(ious) > 0.7 and min(ious) > 0.4, ious


def test_a_picture_without_faces_and_the_cropped_mode():
    blank = Image.new("RGB", (200, 200), (128, 128, 128))
    assert faces.faces_in(blank)[0] == []
    found, crops = faces.faces_in(blank, cropped=True)
    assert len(found) == 1 and crops.shape == (1, 48, 48)


def test_predict_writes_rows_sheets_and_lists_what_it_skipped(sample_faces, tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    _photo(sample_faces, [(40, 80), (250, 90)]).rotate(0).save(photos / "two.jpg")
    Image.new("RGB", (120, 120), (90, 90, 90)).save(photos / "sub" / "empty.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    res = predict.run([photos, tmp_path / "missing.jpg"], out, restorers=["none", "median"], classifiers=["cnn"], progress=False)
    assert not res.unavailable
    rows = res.rows
    assert set(rows["restorer"]) == {"none", "median"} and set(rows["face"]) == {0, 1} and len(rows) == 4
    p = rows[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert (rows["predicted"] == [CLASSES[i] for i in p.argmax(1)]).all()
    reasons = dict(zip(res.skipped["path"].map(lambda s: s.split("/")[-1]), res.skipped["reason"]))
    assert reasons["empty.png"] == "no face found" and reasons["broken.jpg"].startswith("unreadable")
    assert reasons["missing.jpg"] == "no such file or folder"
    assert (out / "predictions.csv").is_file() and (out / "skipped.csv").is_file()
    (sheet,) = res.sheets
    assert Image.open(sheet).size == (2 * predict.CELL, 2 * (predict.CELL + 28))


def test_exif_orientation_is_honoured(sample_faces, tmp_path):
    photo = _photo(sample_faces, [(40, 80)], size=(300, 260))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    photo.rotate(90, expand=True).save(tmp_path / "rotated.jpg", exif=exif)
    upright = faces.open_photo(tmp_path / "rotated.jpg")
    assert upright.size == photo.size
    assert len(faces.faces_in(upright)[0]) == 1


def test_a_data_set_of_photographs_is_read_through_detection(sample_faces, tmp_path):
    """data.detect_faces: each photo's face is found, aligned and cropped; a photo without one is skipped, named."""
    from fer_helpers import data

    (tmp_path / "test" / "happy").mkdir(parents=True)
    (tmp_path / "test" / "sad").mkdir(parents=True)
    _photo(sample_faces, [(150, 90)]).save(tmp_path / "test" / "happy" / "portrait.jpg", quality=95)
    Image.new("RGB", (300, 200), (90, 120, 60)).save(tmp_path / "test" / "sad" / "landscape.jpg")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        ds = data.load_folder(tmp_path, "test", read_face=faces.face_from_photo)
    assert ds.ids.tolist() == ["test/happy/portrait.jpg"] and ds.images.shape == (1, 48, 48)
    assert ds.skipped == [("test/sad/landscape.jpg", "no face found by the detector (data.detect_faces)")]
    direct = faces.faces_in(faces.open_photo(tmp_path / "test" / "happy" / "portrait.jpg"))[1][0]
    np.testing.assert_array_equal(ds.images[0], direct)  # the same crop predict makes
    with pytest.raises(ValueError, match="detect_faces needs image files"):
        from fer_helpers.config import parse_params

        parse_params({"data": {"source": "csv", "path": "x.csv", "eval_split": "PublicTest", "train_split": None, "detect_faces": True}})
