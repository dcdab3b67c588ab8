import time

import numpy as np
import pytest

from fer_helpers import quality, restore, unet, unet_cli
from fer_helpers.config import QUALITY_PRESETS, QualityThresholds
from fer_helpers.degrade import PRESETS, apply_preset, pair_metrics, salt_and_pepper

CTX = restore.RestoreContext(thresholds=QualityThresholds(**QUALITY_PRESETS["project"]), batch_size=16, allow_download=False)


def degraded(faces, preset):
    return apply_preset(faces.images, list(faces.ids), PRESETS[preset], seed=0)


def gain(faces, preset, r):
    d = degraded(faces, preset)
    return np.mean(pair_metrics(faces.images, r(d))[0]) - np.mean(pair_metrics(faces.images, d)[0])


@pytest.mark.parametrize("name", ["none", "median", "switching_median", "nlm", "unsharp", "wiener", "auto", "auto+gate"])
def test_classical_restorers_keep_shape_dtype_and_are_deterministic(name, sample_faces):
    r = restore.create(name, CTX)
    x = degraded(sample_faces, "seed000_chain")[:8]
    y = r(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(y, r(x))
    assert r(x[:0]).shape == (0, 48, 48)


def test_each_classical_filter_helps_on_its_degradation(sample_faces):
    assert gain(sample_faces, "seed003_sp", restore.create("median", CTX)) > 8
    assert gain(sample_faces, "seed003_sp", restore.create("switching_median", CTX)) > 14
    assert gain(sample_faces, "noise_15", restore.create("nlm", CTX)) > 1
    assert gain(sample_faces, "blur_1", restore.create("unsharp", CTX)) > 0
    assert gain(sample_faces, "blur_1", restore.create("wiener", CTX)) > 0


def test_auto_picks_the_filter_from_the_quality_check(sample_faces):
    auto = restore.create("auto", CTX)
    plan = {p: auto.plan(degraded(sample_faces, p)) for p in ("seed003_sp", "noise_25", "noise_35", "blur_2")}
    assert (plan["seed003_sp"] == "switching_median").mean() > 0.9
    assert (plan["noise_25"] == "nlm").mean() > 0.9
    assert (plan["noise_35"] == "nlm").mean() > 0.9  # its clipped 0/255 pixels are not salt-and-pepper
    assert np.mean(["unsharp" in p for p in plan["blur_2"]]) > 0.9  # a few also get nlm first
    assert (auto.plan(sample_faces.images) == "none").mean() > 0.6


def test_salt_and_pepper_is_told_from_heavy_gaussian_noise_that_clips_to_0_and_255(sample_faces):
    sp, g = degraded(sample_faces, "sp_0.02"), degraded(sample_faces, "noise_35")
    clipped = restore.impulse_fraction(g) >= restore.IMPULSE_MIN
    assert clipped.mean() > 0.2  # the impulse count alone would call these faces salt-and-pepper
    assert restore.salt_and_pepper_faces(sp).mean() > 0.9 and not restore.salt_and_pepper_faces(g).any()
    assert not restore.salt_and_pepper_faces(sample_faces.images[:0]).size


def test_switching_median_changes_only_impulses_and_beats_the_plain_median():
    rng = np.random.default_rng(0)
    clean = rng.integers(60, 200, (4, 48, 48), dtype=np.uint8)
    clean[0, :10, :10] = 255  # a genuinely saturated patch: its inside has no unsaturated neighbour and stays
    noisy = salt_and_pepper(clean, [np.random.default_rng(i) for i in range(4)], 0.1)
    out = restore.create("switching_median", CTX)(noisy)
    hit = (noisy == 0) | (noisy == 255)
    np.testing.assert_array_equal(out[~hit], noisy[~hit])  # a pixel that is not 0/255 is never touched
    assert (out[0, 2:8, 2:8] == 255).all()
    assert not ((out[1:] == 0) | (out[1:] == 255)).any()  # every impulse replaced by a value from its neighbours
    psnr = lambda y: pair_metrics(clean, y)[0].mean()  # noqa: E731
    assert psnr(out) > psnr(restore.create("median", CTX)(noisy)) + 1


def test_gate_restores_exactly_the_flagged_faces(sample_faces):
    x = np.concatenate([sample_faces.images[:10], degraded(sample_faces, "noise_25")[10:20]])
    gated, inner = restore.create("median+gate", CTX), restore.create("median", CTX)
    flagged = quality.verdict(quality.measure(x), CTX.thresholds)["flagged"].to_numpy()
    assert flagged[10:].all() and flagged.sum() < 20
    y = gated(x)
    np.testing.assert_array_equal(y[~flagged], x[~flagged])
    np.testing.assert_array_equal(y[flagged], inner(x[flagged]))
    assert gated.name == "median+gate"


def test_registry_adds_a_restorer_in_one_line_and_names_unknown_ones():
    @restore.register("invert_for_test", "classical")
    class Invert(restore.Restorer):
        def __init__(self, ctx):
            pass

        def restore(self, images):
            return 255 - images

    try:
        assert restore.create("invert_for_test", CTX)(np.zeros((1, 48, 48), np.uint8)).max() == 255
    finally:
        del restore.REGISTRY["invert_for_test"]
    with pytest.raises(KeyError, match="unknown restorer 'nope'; known: .*median"):
        restore.create("nope", CTX)


def test_unet_missing_weights_is_unavailable_fast_with_the_fix(tmp_path):
    t = time.perf_counter()
    with pytest.raises(restore.RestorerUnavailable) as e:
        restore.create("unet", restore.RestoreContext(weights={"unet": str(tmp_path / "none.safetensors")}))
    assert time.perf_counter() - t < 1.0
    assert "none.safetensors" in e.value.reason and "README" in e.value.fix and "\n" not in str(e.value)


def test_unet_weights_round_trip_and_bad_files(tmp_path):
    import torch

    torch.manual_seed(0)
    model = unet.AttentionUNet().eval()
    f = tmp_path / "w.safetensors"
    unet.save_model(model, f, {"note": "random"})
    loaded, meta = unet.load_model(f)
    assert meta["note"] == "random"
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    r = restore.create("unet", restore.RestoreContext(weights={"unet": str(f)}))
    y = r(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(y, unet.denoise(loaded, x))
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(f.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.safetensors is not a readable safetensors file"):
        unet.load_model(bad)
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="does not hold Attention U-Net weights"):
        unet.load_model(other)


@pytest.mark.slow
def test_unet_training_learns_to_denoise(sample_faces, tmp_path):
    faces = np.concatenate([sample_faces.images] * 4)
    cfg = unet.TrainConfig(presets=["noise_25"], epochs=4, batch_size=16, lr=3e-3, val_images=24, seed=0, threads=2)
    card = unet.train(faces, cfg, tmp_path / "u.safetensors", log=lambda *_: None)
    noisy_psnr = 20 * np.log10(255 / 25)
    assert card["val_psnr"] > noisy_psnr + 1.5, card["history"]
    assert (tmp_path / "u.safetensors").is_file() and card["best_epoch"] >= 1


def test_psnr_loss_is_minus_the_mean_per_face_psnr_and_weighs_faces_equally(tmp_path):
    import torch
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    clean = rng.random((3, 1, 8, 8))
    noisy = np.clip(clean + rng.normal(0, [[[[0.01]]], [[[0.05]]], [[[0.2]]]], clean.shape), 0, 1)
    want = np.mean([peak_signal_noise_ratio(c[0], n[0], data_range=1.0) for c, n in zip(clean, noisy)])
    got = unet.pixel_loss(torch.from_numpy(noisy), torch.from_numpy(clean), "psnr").item()
    assert got == pytest.approx(-want, abs=1e-3)  # the loss adds 1e-8 to each MSE (no log of 0)
    # halving the error of the mildest face lowers the loss as much as halving the worst face's; L1 prefers the worst
    def gain(kind, face):
        better = noisy.copy()
        better[face] = clean[face] + (noisy[face] - clean[face]) / 2
        t = torch.from_numpy
        return unet.pixel_loss(t(noisy), t(clean), kind).item() - unet.pixel_loss(t(better), t(clean), kind).item()

    assert gain("psnr", 0) == pytest.approx(gain("psnr", 2), abs=1e-3) == 10 * np.log10(4) / 3  # 6 dB on one face of 3
    assert gain("l1", 2) > 5 * gain("l1", 0)
    with pytest.raises(ValueError, match="loss 'ssim'"):
        unet.train(np.zeros((40, 48, 48), np.uint8), unet.TrainConfig(loss="ssim", val_images=4), tmp_path / "x.safetensors")


@pytest.mark.slow
def test_unet_impulse_switch_trains_in_bf16_and_touches_only_0_255_pixels(sample_faces, tmp_path):
    cfg = unet.TrainConfig(presets=["seed003_sp"], epochs=1, batch_size=16, val_images=16, seed=0, precision="bf16",
                           impulse_switch=True, threads=2)
    card = unet.train(sample_faces.images, cfg, tmp_path / "sp.safetensors", log=lambda *_: None)
    assert card["impulse_switch"] and card["config"]["precision"] == "bf16" and np.isfinite(card["history"][0]["train_loss"])
    x = degraded(sample_faces, "seed003_sp")[:8]
    y = restore.create("unet", restore.RestoreContext(weights={"unet": str(tmp_path / "sp.safetensors")}))(x)  # fused copy
    hit = (x == 0) | (x == 255)
    np.testing.assert_array_equal(y[~hit], x[~hit])
    assert (y[hit] != x[hit]).mean() > 0.25  # the impulses themselves change (after one epoch on a few faces)
    with pytest.raises(ValueError, match="precision 'fp8'"):
        unet.train(sample_faces.images, unet.TrainConfig(precision="fp8"), tmp_path / "x.safetensors")


@pytest.mark.slow
def test_unet_flip_self_ensemble_is_mirror_equivariant_and_named_in_errors():
    import torch

    torch.manual_seed(0)
    m = unet.AttentionUNet().eval()
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    y = unet.denoise(m, x, tta="flip")
    np.testing.assert_array_equal(unet.denoise(m, x[:, :, ::-1].copy(), tta="flip"), y[:, :, ::-1])
    plain, mirrored = unet.denoise(m, x).astype(float), unet.denoise(m, x[:, :, ::-1].copy())[:, :, ::-1].astype(float)
    assert np.abs(y - (plain + mirrored) / 2).max() <= 1  # the mean of the two, up to rounding
    assert not np.array_equal(y, plain)
    with pytest.raises(ValueError, match="'rot90'.*none, flip"):
        unet.denoise(m, x, tta="rot90")


def test_summary_pairs_gains_and_leaves_identical_pairs_out_of_psnr_means():
    import pandas as pd

    inf = float("inf")
    m = pd.DataFrame({
        "id": ["a", "b", "a", "b", "a", "b"],
        "condition": ["noise", "noise", "noise", "noise", "clean", "clean"],
        "restorer": ["none", "none", "nlm", "nlm", "nlm", "nlm"],
        "psnr": [20.0, 22.0, 25.0, 21.0, 40.0, inf],
        "ssim": [0.5, 0.6, 0.7, 0.5, 0.99, 1.0],
        "psnr_degraded": [20.0, 22.0, 20.0, 22.0, inf, inf],
        "ssim_degraded": [0.5, 0.6, 0.5, 0.6, 1.0, 1.0],
    })
    s = restore.summary(m).set_index(["condition", "restorer"])
    assert s.loc[("noise", "nlm"), "PSNR gain (dB)"] == pytest.approx(((25 - 20) + (21 - 22)) / 2)
    assert s.loc[("noise", "nlm"), "improved"] == 0.5
    assert s.loc[("noise", "nlm"), "SSIM gain"] == pytest.approx(0.6 - 0.55)
    assert s.loc[("clean", "nlm"), "PSNR (dB)"] == 40.0 and s.loc[("clean", "nlm"), "identical to clean"] == 1
    assert np.isnan(s.loc[("clean", "nlm"), "PSNR gain (dB)"])


@pytest.mark.slow
def test_unet_training_with_the_patchgan_runs_and_saves(sample_faces, tmp_path):
    cfg = unet.TrainConfig(presets=["seed003_sp"], epochs=1, batch_size=16, val_images=16, adv_weight=0.001, loss="mse", seed=1)
    card = unet.train(sample_faces.images, cfg, tmp_path / "gan.safetensors", log=lambda *_: None)
    assert card["config"]["adv_weight"] == 0.001 and np.isfinite(card["history"][0]["train_loss"])
    model, meta = unet.load_model(tmp_path / "gan.safetensors")
    assert meta["config"]["loss"] == "mse"


@pytest.mark.slow
def test_unet_auto_routes_each_face_to_the_fine_tune_its_measurements_call_for(sample_faces, tmp_path):
    import torch

    weights = {}
    for k, name in enumerate(["blind", "seed003_low", "seed003_high", "seed003_sp"]):
        torch.manual_seed(k)
        weights["unet" if name == "blind" else f"unet_{name}"] = str(tmp_path / f"{name}.safetensors")
        unet.save_model(unet.AttentionUNet().eval(), tmp_path / f"{name}.safetensors", {"name": name})
    r = restore.create("unet_auto", restore.RestoreContext(weights=weights, thresholds=CTX.thresholds))
    x = np.concatenate([degraded(sample_faces, "seed003_sp")[:4], degraded(sample_faces, "seed003_high")[:4], sample_faces.images[:4],
                        degraded(sample_faces, "noise_35")[:4]])
    plan = r.plan(x)
    assert plan[:4].tolist() == ["seed003_sp"] * 4 and plan[4:8].tolist() == ["seed003_high"] * 4
    assert plan[12:].tolist() == ["blind"] * 4  # far above the high fine-tune's sigma: the blind model does better there
    y = r(x)
    np.testing.assert_array_equal(y[:4], unet.denoise(r.models["seed003_sp"], x[:4]))
    blind = np.flatnonzero(plan == "blind")
    np.testing.assert_array_equal(y[blind], unet.denoise(r.blind.model, x[blind]))
    with pytest.raises(restore.RestorerUnavailable, match="unet_auto"):
        restore.create("unet_auto", restore.RestoreContext(weights={"unet": weights["unet"], "unet_seed003_sp": str(tmp_path / "x")}))


@pytest.mark.parametrize("name", ["auto", "median+gate", "nlm+gate", "auto+gate"])
def test_reusing_other_restorers_output_gives_the_same_faces(name, sample_faces):
    x = np.concatenate([sample_faces.images[:10], degraded(sample_faces, "noise_25")[10:20], degraded(sample_faces, "seed003_sp")[20:30],
                        degraded(sample_faces, "blur_2")[30:40]])
    done = {}
    for inner in ("median", "nlm", "unsharp", "auto"):
        done[inner] = restore.run_restorer(restore.create(inner, CTX), x, 16)[0], 1.0  # pretend 1 s per face
    r = restore.create(name, CTX)
    out, spi = restore.run_restorer(r, x, 16, done=done)
    np.testing.assert_array_equal(out, r(x))
    # the reused restorer's time counts for the share of faces taken from it
    assert 0.05 < spi < 1.0 + 0.5
    assert restore.run_restorer(r, x, 16)[1] < 0.5


def test_evaluate_on_scores_weights_and_registered_restorers_on_the_same_pairs(sample_faces, tmp_path):
    import torch

    torch.manual_seed(0)
    unet.save_model(unet.AttentionUNet().eval(), tmp_path / "u.safetensors", {"name": "random"})
    faces = sample_faces.take(np.arange(12))
    table = unet_cli.evaluate_on(faces, {"rand": tmp_path / "u.safetensors"}, ["noise_25", "seed003_sp"],
                             classical=("median", "nlm"), restorers=["switching_median"])
    sp = table.set_index("preset").loc["seed003_sp"]
    noisy = apply_preset(faces.images, faces.ids, PRESETS["seed003_sp"], 0)
    want = pair_metrics(faces.images, restore.create("switching_median", restore.RestoreContext())(noisy))[0].mean()
    assert sp["switching_median PSNR"] == pytest.approx(want)
    assert sp["noisy PSNR"] == pytest.approx(pair_metrics(faces.images, noisy)[0].mean())
    model = unet.load_model(tmp_path / "u.safetensors")[0]
    assert sp["rand PSNR"] == pytest.approx(pair_metrics(faces.images, unet.denoise(model, noisy))[0].mean(), abs=1e-3)
    assert sp["best classical"] == "median" and table.set_index("preset").loc["noise_25", "best classical"] == "nlm"


@pytest.mark.parametrize("args, message", [
    ([], "give --weights NAME=PATH"),
    (["--restorers", "nope"], "unknown restorer 'nope'"),
    (["--weights", "blind.safetensors"], "NAME=PATH pairs"),
])
def test_unet_evaluate_cli_names_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit):
        unet_cli.main(["evaluate", "--fer2013", "unused", *args])
    assert message in capsys.readouterr().err


def test_restorer_options_reach_the_restorer_wherever_it_runs(sample_faces, tmp_path):
    from dataclasses import replace

    import torch

    x = degraded(sample_faces, "seed003_high")[:8]
    strong = replace(CTX, options={"nlm": {"h_factor": 1.5}})
    default_nlm, strong_nlm = restore.create("nlm", CTX), restore.create("nlm", strong)
    assert (default_nlm.h_factor, strong_nlm.h_factor) == (0.7, 1.5)
    assert not np.array_equal(default_nlm(x), strong_nlm(x))
    assert restore.create("nlm+gate", strong).inner.h_factor == 1.5  # the gated filter is the same filter
    assert restore.create("auto", strong).nlm.h_factor == 1.5  # so is auto's step, whose output it may reuse
    torch.manual_seed(0)
    f = tmp_path / "w.safetensors"
    unet.save_model(unet.AttentionUNet().eval(), f, {})
    flip = restore.create("unet", restore.RestoreContext(weights={"unet": str(f)}, options={"unet": {"tta": "flip"}}))
    assert flip.tta == "flip"
    np.testing.assert_array_equal(flip(x), unet.denoise(unet.load_model(f)[0], x, tta="flip"))
    with pytest.raises(ValueError, match=r"restoration.options.nlm: unknown option\(s\) h; it takes h_factor, patch_size, patch_distance"):
        restore.create("nlm", replace(CTX, options={"nlm": {"h": 1.0}}))
    with pytest.raises(ValueError, match="unknown option.*it takes none"):
        restore.create("none", replace(CTX, options={"none": {"x": 1}}))
    with pytest.raises(ValueError, match="'mirror'.*use one of none, flip"):
        restore.create("unet", restore.RestoreContext(weights={"unet": str(f)}, options={"unet": {"tta": "mirror"}}))


def test_unet_trains_through_the_one_loop_and_a_gan_run_resumes_to_the_same_weights(sample_faces, tmp_path):
    """The U-Net's recipe runs on training.fit; with the PatchGAN, the discriminator is the loop's companion: it is
    checkpointed with the U-Net, so a run stopped after epoch 1 and resumed ends with the weights of a run that
    never stopped (U-Net and discriminator)."""
    import torch

    from fer_helpers import training

    cfg = unet.TrainConfig(presets=["seed003_sp"], epochs=2, batch_size=16, val_images=8, max_train_images=32,
                           adv_weight=0.01, loss="mse", seed=3, device="cpu")

    def run(folder, **kw):
        recipe, tr = unet.make_recipe(cfg, sample_faces.images)
        result = training.fit(recipe, torch.from_numpy(tr), torch.zeros(len(tr), dtype=torch.int64), cfg,
                              checkpoint=folder / "ck.pt", progress=False, log=lambda _: None, **kw)
        return result, recipe.companion.module

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    full, disc_full = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=1)
    resumed, disc_resumed = run(tmp_path / "b", resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(disc_full.state_dict().values(), disc_resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    start = unet.make_recipe(cfg, sample_faces.images)[0].companion.module.state_dict()
    assert any(not torch.equal(a, b) for a, b in zip(start.values(), disc_full.state_dict().values()))  # it trained
