"""scripts/unet_model_card.py writes the U-Net card from measured files only (never hand-typed numbers)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _eval_rows(presets, models, base):
    rows = []
    for k, p in enumerate(presets):
        row = {"preset": p, "faces": 3309, "noisy PSNR": 20.0 + k, "noisy SSIM": 0.5, "best classical": "switching_median",
               "classical PSNR": 30.0 + k, "classical SSIM": 0.9}
        for j, m in enumerate(models):
            row |= {f"{m} PSNR": base + k + j / 10, f"{m} SSIM": 0.95}
        rows.append(row)
    return pd.DataFrame(rows)


def test_card_merges_evaluations_and_prints_their_figures(tmp_path):
    _eval_rows(["seed003_low", "seed003_sp", "blur_1"], ["blind"], 31.0).to_csv(tmp_path / "all.csv", index=False)
    _eval_rows(["seed003_low", "seed003_sp"], ["seed003_sp"], 37.0).to_csv(tmp_path / "ft.csv", index=False)
    _eval_rows(["seed003_sp"], ["seed003_sp+flip"], 37.55).to_csv(tmp_path / "flip.csv", index=False)
    card = {"config": {"presets": ["seed003_sp"], "init": "models/unet_denoiser/blind.safetensors", "epochs": 12, "lr": 0.001,
                       "loss": "l1", "batch_size": 64, "precision": "bf16"},
            "impulse_switch": True, "best_epoch": 11, "train_images": 27357, "val_psnr": 37.9, "train_seconds": 1200.0,
            "device": "cpu", "threads": 2, "torch": "2.x", "history": [{}] * 12, "note": "a note"}
    (tmp_path / "seed003_sp.json").write_text(json.dumps(card))
    out = tmp_path / "README.md"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "unet_model_card.py"), "--eval", str(tmp_path / "all.csv"),
                    str(tmp_path / "ft.csv"), str(tmp_path / "flip.csv"), "--cards", str(tmp_path / "seed003_sp.json"),
                    "--out", str(out)], check=True, capture_output=True)
    text = out.read_text()
    assert "| preset | faces | noisy input | best classical | blind | seed003_sp | seed003_sp+flip | target | U-Net vs classical |" in text
    # seed003_sp is the second row of each table: blind 32.00, fine-tune 38.00 (its first row +1), flip 37.55, target 36.9
    assert "| seed003_sp | 3,309 | 21.00 / 0.500 | 31.00 / 0.900 (switching_median) | 32.00 / 0.950 | 38.00 / 0.950 | 37.55 / 0.950 | 36.9 | +1.00 (blind) |" in text
    assert "| blur_1 | 3,309 | 22.00 / 0.500 | 32.00 / 0.900 (switching_median) | 33.00 / 0.950 |  |  |  | +1.00 (blind) |" in text
    assert "impulse switch" in text and "12 of 12 planned (11)" in text and "bf16" in text and "a note" in text
