import subprocess
import sys

import pytest

from fer_helpers.config import QUALITY_PRESETS, ParamsError, load_params, parse_params, save_params
from fer_helpers.paths import PARAMS_DIR


@pytest.mark.parametrize("name", sorted(p.name for p in PARAMS_DIR.glob("*.yaml")))
def test_every_shipped_parameter_set_validates(name, monkeypatch):
    monkeypatch.setenv("FER2013_DIR", "/data/fer2013")
    monkeypatch.setenv("FER2013_CSV", "/data/fer2013.csv")
    p = load_params(PARAMS_DIR / name)
    assert p.data_path().is_absolute()


def write(tmp_path, text, name="p.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_unknown_key_names_key_file_allowed_and_suggestion(tmp_path):
    f = write(tmp_path, "data:\n  per_clas: 3\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    msg = str(e.value)
    assert "'data.per_clas'" in msg and str(f) in msg and "per_class" in msg and "did you mean" in msg
    assert "\n" not in msg


def test_wrong_type_and_out_of_range(tmp_path):
    with pytest.raises(ParamsError, match=r"data\.per_class: Input should be a valid integer.*'many'"):
        load_params(write(tmp_path, "data: {per_class: many}\n"))
    with pytest.raises(ParamsError, match=r"seed: Input should be greater than or equal to 0"):
        load_params(write(tmp_path, "seed: -3\n"))
    with pytest.raises(ParamsError, match=r"quality\.preset: Input should be 'seed000' or 'project'"):
        load_params(write(tmp_path, "quality: {preset: strict}\n"))


def test_unknown_preset_and_notebook(tmp_path):
    with pytest.raises(ParamsError, match=r"degradation\.presets: unknown preset 'jpeg_21' \(did you mean 'jpeg_20'\?\)"):
        load_params(write(tmp_path, "degradation: {presets: [jpeg_21]}\n"))
    with pytest.raises(ParamsError, match=r"notebooks: no notebook '07_extra'.*allowed: 01_degradation"):
        load_params(write(tmp_path, "notebooks: [01_degradation, 07_extra]\n"))
    with pytest.raises(ParamsError, match=r"numbered order"):
        load_params(write(tmp_path, "notebooks: [02_quality_check, 01_degradation]\n"))


def test_custom_presets(tmp_path):
    p = load_params(write(tmp_path, "degradation:\n  presets: [mine]\n  custom:\n    mine: {steps: [{op: jpeg, value: 30}, {op: gaussian_noise, value: 4}]}\n"))
    (preset,) = p.degradation.resolved_presets()
    assert preset.describe() == "jpeg(quality=30) -> gaussian_noise(sigma=4)"
    with pytest.raises(ParamsError, match=r"degradation\.custom: custom preset 'bad': .*outside"):
        load_params(write(tmp_path, "degradation:\n  custom:\n    bad: {steps: [{op: jpeg, value: 300}]}\n"))


def test_csv_splits_are_checked(tmp_path):
    with pytest.raises(ParamsError, match=r"data: eval_split 'test' is not a Usage of fer2013.csv; allowed: Training, PublicTest, PrivateTest"):
        load_params(write(tmp_path, "data: {source: csv, path: x.csv, eval_split: test, train_split: Training}\n"))


def test_missing_env_var_and_bad_yaml_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FER2013_DIR", raising=False)
    p = load_params(write(tmp_path, "data: {path: '${FER2013_DIR}'}\n"))
    with pytest.raises(ParamsError, match=r"FER2013_DIR is not set: export FER2013_DIR="):
        p.data_path()
    with pytest.raises(ParamsError, match=r"not valid YAML"):
        load_params(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ParamsError, match=r"not found; the sets in params/ are: .*default.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_resolved_parameters_round_trip_with_the_same_digest(tmp_path):
    p = load_params(PARAMS_DIR / "default.yaml", {"quality.thresholds": {"snr_db_min": None}, "data.per_class": 3})
    assert p.quality.thresholds.snr_db_min is None
    assert p.quality.thresholds.laplacian_var_min == QUALITY_PRESETS["project"]["laplacian_var_min"]
    save_params(p, tmp_path / "r.yaml")
    q = load_params(tmp_path / "r.yaml")
    assert q == p and q.digest() == p.digest()
    assert parse_params({"seed": 1}).digest() != parse_params({"seed": 2}).digest()


def test_cli_validate_prints_one_line_error(tmp_path):
    f = write(tmp_path, "degradation: {batch_size: 0}\n")
    r = subprocess.run([sys.executable, "-m", "fer_helpers.cli", "validate", str(f)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "degradation.batch_size" in r.stderr and str(f) in r.stderr


def test_section_digests_ignore_other_sections():
    a = parse_params({"classification": {"batch_size": 64}})
    b = parse_params({"classification": {"batch_size": 128}})
    assert a.digest() != b.digest()
    assert a.digest("seed", "data", "restoration") == b.digest("seed", "data", "restoration")
    assert a.digest("classification") != b.digest("classification")


def test_stage_keys_ignore_how_many_workers_but_not_the_device():
    from fer_helpers.io import STAGE_SECTIONS

    base = parse_params({})
    faster = parse_params({"compute": {"workers": 1, "num_threads": 1}})
    gpu = parse_params({"compute": {"device": "cuda"}})
    for stage in ("restoration", "classification"):
        assert base.digest(*STAGE_SECTIONS[stage]) == faster.digest(*STAGE_SECTIONS[stage])
        assert base.digest(*STAGE_SECTIONS[stage]) != gpu.digest(*STAGE_SECTIONS[stage])


def test_training_configs_round_trip_through_their_command_line_options():
    import argparse

    from fer_helpers import cnn, unet, vit
    from fer_helpers.training import add_config_options, config_from_args

    for cls in (unet.TrainConfig, cnn.CNNTrainConfig, vit.ViTTrainConfig):
        ap = argparse.ArgumentParser()
        add_config_options(ap, cls, {"init": str, "max_train_images": int, "threads": int})
        assert config_from_args(cls, ap.parse_args([])) == cls()
        assert config_from_args(cls, ap.parse_args(["--epochs", "3", "--threads", "2"])) == cls(epochs=3, threads=2)
    # a bool field is a switch (type=bool would read "--impulse-switch False" as True)
    ap = argparse.ArgumentParser()
    add_config_options(ap, unet.TrainConfig, {"init": str, "max_train_images": int, "threads": int})
    assert config_from_args(unet.TrainConfig, ap.parse_args(["--impulse-switch"])).impulse_switch
    assert not config_from_args(unet.TrainConfig, ap.parse_args(["--no-impulse-switch"])).impulse_switch


def test_weights_maps_refuse_unknown_names_with_a_suggestion():
    with pytest.raises(ParamsError, match=r"classification\.weights: unknown name 'cnnn' \(did you mean 'cnn'\?\)"):
        parse_params({"classification": {"weights": {"cnnn": "models/cnn/other.safetensors"}}})
    with pytest.raises(ParamsError, match=r"restoration\.weights: unknown name 'unett' \(did you mean 'unet'\?\)"):
        parse_params({"restoration": {"weights": {"unett": "x.safetensors"}}})
    ok = parse_params({"restoration": {"weights": {"unet_seed003_sp": "x.safetensors", "gfpgan_v1.4": "g.pth"}},
                       "classification": {"weights": {"cnn_ensemble": "a.safetensors,b.safetensors"}}})
    assert ok.restoration.weights["unet_seed003_sp"] == "x.safetensors"


def test_showcase_preset_must_be_degraded_and_scored():
    with pytest.raises(ParamsError, match=r"statistics\.showcase_preset 'jpeg_11' is not among degradation\.presets \(did you mean 'jpeg_10'\?\)"):
        parse_params({"degradation": {"presets": ["jpeg_10", "seed000_chain"]}, "statistics": {"showcase_preset": "jpeg_11"}})
    with pytest.raises(ParamsError, match=r"showcase_preset 'jpeg_10' is not among classification\.presets"):
        parse_params({"degradation": {"presets": ["jpeg_10", "seed000_chain"]}, "classification": {"presets": ["seed000_chain"]},
                      "statistics": {"showcase_preset": "jpeg_10"}})
    assert parse_params({"degradation": {"presets": ["jpeg_10"]}, "statistics": {"showcase_preset": "jpeg_10"}})
    # not set, and the default is not in the run: the run's first scored preset is shown instead
    p = parse_params({"degradation": {"presets": ["jpeg_10", "blur_3"]}, "classification": {"presets": ["blur_3"]}})
    assert p.statistics.showcase_preset == "blur_3"


@pytest.mark.parametrize("text, message", [
    ("data:\n  per_class:\n", r"line 2, column 13: 'per_class' has no value; write null"),
    ("seed: 1\nseed: 2\n", r"line 2, column 1: duplicated key 'seed' \(first at line 1\)"),
    ("data:\n  per_class: yes\n", r"data.per_class: expected a number, not a yes/no value"),
    ("statistics:\n  n_boot: true\n", r"statistics.n_boot: expected a number"),
    ("data: [1, 2\n", r"not valid YAML at line 2, column 1"),
    ("", r"the file is empty"),
])
def test_parameter_files_that_yaml_would_quietly_coerce_are_refused(tmp_path, text, message):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError, match=message) as e:
        load_params(f)
    assert str(f) in str(e.value)


def test_explicit_null_and_true_booleans_still_read(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("data:\n  per_class: null\nshow_progress: no\n")
    p = load_params(f)
    assert p.data.per_class is None and p.show_progress is False


def test_a_parameter_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ParamsError, match=r"p.yaml: not UTF-8 text \(byte 9\)"):
        load_params(f)


def test_restorer_options_are_read():
    params = parse_params({"restoration": {"options": {"codeformer": {"w": 0.5}, "unet": {"tta": "flip"}}}})
    assert params.restoration.options == {"codeformer": {"w": 0.5}, "unet": {"tta": "flip"}}


@pytest.mark.parametrize("text, message", [
    ("restoration:\n  options: {nlm: {sigma: 3}}\n", r"restoration\.options.*nlm: unknown option\(s\) sigma; it takes h_factor"),
    ("restoration:\n  options: {nlmm: {h_factor: 1}}\n", r"unknown restorer.*'nlmm'"),
    ("restoration: {codeformer_w: 0.6}\n", r"codeformer_w is now restoration\.options: \{codeformer: \{w: 0\.6\}\}"),
    ("restoration: {unet_tta: flip}\n", r"unet_tta is now restoration\.options: \{unet: \{tta: flip\}"),
])
def test_bad_restorer_options_and_old_keys_say_what_to_write(tmp_path, text, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, text))
