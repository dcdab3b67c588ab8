"""scripts/classifier_cards.py writes models/README.md from the cards the training and averaging commands wrote."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CM = [[1 if i == j else 0 for j in range(7)] for i in range(7)]


def cards_of(tmp_path: Path, name: str, card: dict) -> str:
    """models/README.md as the script writes it from this one card, saved as ``name``."""
    (tmp_path / name).write_text(json.dumps(card))
    out = tmp_path / "README.md"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "classifier_cards.py"), str(tmp_path / name), "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    return out.read_text()


def test_a_weight_average_gets_its_members_and_start_in_its_row(tmp_path):
    soup = {"arch": "CompactCNN", "config": {"width": 64, "dropout": 0.4},
            "weight_average_of": [{"weights": "a.safetensors", "val_accuracy": 0.6942}, {"weights": "b.safetensors", "val_accuracy": 0.6951}],
            "common_start": "a.safetensors", "selection": "greedy, best member first, on PublicTest", "val_accuracy": 0.70123,
            "val_macro_f1": 0.671, "val_tta": "ten_crop", "confusion_matrix": CM, "hardware": "AMD EPYC",
            "val_accuracy_by_preset": {"seed003_sp": 0.6401}}
    text = cards_of(tmp_path, "my_soup.json", soup)
    assert ("| my_soup | `" + tmp_path.name + "/` | mean weights of a.safetensors (0.6942), b.safetensors (0.6951), all fine-tuned "
            "from a.safetensors (members: greedy, best member first, on PublicTest) | (members') | 0.7012 (ten_crop TTA) | 0.6710 |") in text
    assert "PublicTest accuracy on each seed preset (ten-crop): seed003_sp 0.6401" in text
    assert "## my_soup: PublicTest confusion matrix" in text


def test_a_continued_run_names_its_start_and_the_epochs_the_start_had_run(tmp_path):
    card = {"arch": "ViTForImageClassification", "config": {"epochs": 40, "lr": 0.0003, "init": "models/vit_fer2013"},
            "val_accuracy": 0.5512, "val_macro_f1": 0.47, "confusion_matrix": CM, "best_epoch": 38, "epochs_run": 40,
            "kept_weights": "ema", "images_per_second": 220.0, "train_seconds": 5600.0, "hardware": "AMD EPYC",
            "initialised_from": {"weights": "vit_fer2013", "val_accuracy": 0.5222, "epochs": 60}}
    assert "fine-tuned from vit_fer2013 (60 epochs, PublicTest 0.5222)" in cards_of(tmp_path, "training.json", card)
