from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import file_sha256, load_checkpoint
from models.finetune import FinetuneConfig
from service.cli import main
from tests.frame_data import write_boxes, write_labeled_dir, write_unlabeled_dir

NAMES = ("bed_exit", "staff")
LABELS = [[0], [1], [0, 1], [], [0], [1], [1], [0]] * 2
TINY = ["--arch", "resnet18_slim", "--arch-option", "width=4", "--image-size", "16"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    labeled = write_labeled_dir(root / "labeled", LABELS, NAMES)
    write_boxes(labeled, LABELS, NAMES)
    unlabeled = write_unlabeled_dir(root / "unlabeled", 12)
    return labeled, unlabeled


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    labeled, _ = data
    out = tmp_path_factory.mktemp("model") / "model.pt"
    code = main(
        [
            "train",
            "--labeled",
            str(labeled),
            *TINY,
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_a_self_describing_checkpoint_and_a_log(trained, capsys):
    model, info = load_checkpoint(trained)
    assert info.arch == "resnet18_slim" and info.arch_kwargs == {"width": 4}
    assert info.class_names == list(NAMES) and info.input_size == 16
    assert info.multi_label  # some frames have no label or two
    # 3 validation frames: too few to choose a threshold from, so 0.5 stays and is named
    assert info.thresholds == [0.5, 0.5]
    kept = info.metrics["thresholds"]["kept"]
    assert set(kept) == set(NAMES) and info.metrics["thresholds"]["chosen"] == []
    assert "(at least 5 of each needed): kept the default threshold 0.5000" in kept["staff"]
    assert info.config["supervised"]["epochs"] == 4 and info.config["data"]["val_fraction"] == 0.2
    assert set(info.metrics["validation"]) >= {"macro_f1", "map", "per_class_f1"}
    assert info.parent_hash is None
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 2)
    events = _read_log(trained.with_name("model.pt.log.jsonl"))
    assert events[0]["event"] == "start" and events[-1]["event"] == "checkpoint"
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 4 * 2 and all("supervised" in e for e in steps)


def test_train_chooses_thresholds_where_validation_has_enough_of_each(data, tmp_path):
    labeled, _ = data
    out = tmp_path / "model.pt"
    args = ["train", "--labeled", str(labeled), *TINY, "--epochs", "1", "--out", str(out)]
    assert main([*args, "--min-val-per-class", "1", "--no-progress"]) == 0
    _, info = load_checkpoint(out)
    assert info.thresholds != [0.5, 0.5]
    assert info.metrics["thresholds"]["min_per_class"] == 1
    assert info.metrics["thresholds"]["chosen"] == list(NAMES)


def test_train_with_atcon_records_the_finetune_config(data, tmp_path):
    labeled, unlabeled = data
    out = tmp_path / "atcon.pt"
    code = main(
        [
            "train",
            "--labeled",
            str(labeled),
            "--unlabeled",
            str(unlabeled),
            *TINY,
            "--epochs",
            "2",
            "--atcon",
            "alternating",
            "--atcon-steps",
            "3",
            "--alpha",
            "2",
            "--lr",
            "2e-3",
            "--atcon-lr",
            "3e-4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    _, info = load_checkpoint(out)
    assert info.config["finetune"]["schedule"] == "alternating"
    assert info.config["finetune"]["alpha"] == 2.0
    assert info.config["finetune"]["lr"] == 3e-4 and info.config["supervised"]["lr"] == 2e-3
    assert info.metrics["atcon_steps"] == 3


def test_finetune_records_its_parent_and_keeps_it(data, trained, tmp_path, capsys, caplog):
    _, unlabeled = data
    parent_hash = file_sha256(trained)
    out = tmp_path / "tuned.pt"
    code = main(
        [
            "finetune",
            "--checkpoint",
            str(trained),
            "--unlabeled",
            str(unlabeled),
            "--out",
            str(out),
            "--steps",
            "3",
            "--mask-intensity",
            "4",
            "--no-collapse-guard",
            "--no-progress",
        ]
    )
    assert code == 0
    _, info = load_checkpoint(out)
    assert info.parent_hash == parent_hash and file_sha256(trained) == parent_hash
    tuned = info.config["finetune"]
    assert tuned["schedule"] == "unsupervised" and tuned["steps"] == 3
    assert tuned["mask_intensity"] == 4.0 and tuned["guard"]["enabled"] is False
    defaults = FinetuneConfig()  # options not given keep the library's defaults
    assert tuned["atcon_weight"] == defaults.atcon_weight
    assert tuned["preserve_weight"] == defaults.preserve_weight
    assert tuned["guard"]["window"] == defaults.guard.window
    assert "supervised" in info.config  # the parent's configuration is kept
    summary = json.loads(capsys.readouterr().out)
    assert summary["sha256"] == file_sha256(out)
    assert summary["gate"]["checked"] is False  # no labeled frames: written, and said so
    assert "could not check the fine-tuned model against its parent" in caplog.text
    assert not list(tmp_path.glob(".tuned.pt.*"))  # no candidate file left behind


def test_finetune_will_not_overwrite_with_a_worse_model_unless_forced(
    data, trained, tmp_path, capsys, caplog
):
    labeled, unlabeled = data
    out = tmp_path / "tuned.pt"
    out.write_bytes(b"an earlier checkpoint")
    args = ["finetune", "--checkpoint", str(trained), "--unlabeled", str(unlabeled)]
    args += ["--labeled", str(labeled), "--out", str(out), "--steps", "6", "--lr", "0.3"]
    args += ["--no-collapse-guard", "--no-progress"]
    with caplog.at_level(logging.ERROR):
        code = main(args)
    assert code == 3 and out.read_bytes() == b"an earlier checkpoint"
    assert "was not written: the fine-tuned model is worse than its parent" in caplog.text
    assert "validation macro-F1 fell by" in caplog.text and "--force" in caplog.text
    summary = json.loads(capsys.readouterr().out)
    gate = summary["gate"]
    assert summary["out"] is None and gate["checked"] and gate["passed"] is False
    assert gate["validation_images"] == 3
    assert gate["after"]["macro_f1"] < gate["before"]["macro_f1"]
    assert not list(tmp_path.glob(".tuned.pt.*"))

    assert main([*args, "--force"]) == 0
    _, info = load_checkpoint(out)
    _, parent = load_checkpoint(trained)
    assert info.parent_hash == parent.sha256
    # 3 validation frames: the parent's thresholds are kept, and the checkpoint says so
    assert info.thresholds == parent.thresholds
    assert "kept the parent's threshold" in info.metrics["thresholds"]["kept"]["bed_exit"]


def test_finetune_refuses_data_with_other_classes(data, trained, tmp_path, caplog):
    _, unlabeled = data
    other = write_labeled_dir(tmp_path / "other", [[0], [1]], ("bed_exit", "seizure"))
    out = tmp_path / "tuned.pt"
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "finetune",
                "--checkpoint",
                str(trained),
                "--unlabeled",
                str(unlabeled),
                "--labeled",
                str(other),
                "--out",
                str(out),
                "--steps",
                "2",
                "--no-progress",
            ]
        )
    assert code == 1 and not out.exists()
    assert "checkpoint classes do not match the data" in caplog.text
    assert "bed_exit, staff" in caplog.text and "bed_exit, seizure" in caplog.text


def test_nan_loss_stops_finetuning_and_leaves_checkpoints_intact(data, trained, tmp_path, caplog):
    labeled, unlabeled = data
    out = tmp_path / "tuned.pt"
    out.write_bytes(b"an earlier checkpoint")
    parent_hash = file_sha256(trained)
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "finetune",
                "--checkpoint",
                str(trained),
                "--unlabeled",
                str(unlabeled),
                "--labeled",
                str(labeled),
                "--schedule",
                "combined",
                "--out",
                str(out),
                "--steps",
                "6",
                "--lr",
                "1e30",
                "--no-collapse-guard",
                "--no-progress",
            ]
        )
    assert code == 1
    assert "loss became nan" in caplog.text or "loss became inf" in caplog.text
    assert out.read_bytes() == b"an earlier checkpoint"
    assert file_sha256(trained) == parent_hash


def test_evaluate_prints_figures_and_writes_json(data, trained, tmp_path, capsys):
    labeled, _ = data
    report = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(trained),
            "--labeled",
            str(labeled),
            "--boxes",
            str(labeled / "boxes.csv"),
            "--json",
            str(report),
        ]
    )
    assert code == 0
    figures = json.loads(report.read_text())
    assert set(figures) == {"macro_f1", "map", "per_class_f1", "consistency", "miou"}
    assert set(figures["per_class_f1"]) == set(NAMES)
    assert 0.0 <= figures["miou"] <= 1.0 and -1.0 <= figures["consistency"] <= 1.0
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "weak-localisation mIoU" in printed
    code = main(
        ["evaluate", "--checkpoint", str(trained), "--labeled", str(labeled), "--json", str(report)]
    )
    assert code == 0 and json.loads(report.read_text())["miou"] is None


def test_train_refuses_an_empty_labeled_set(tmp_path, caplog):
    root = write_labeled_dir(tmp_path / "l", [[0]], NAMES)
    (root / "img" / "f000.png").write_bytes(b"broken")
    with caplog.at_level(logging.ERROR):
        code = main(["train", "--labeled", str(root), *TINY, "--out", str(tmp_path / "m.pt")])
    assert code == 1 and "no usable frame" in caplog.text
    assert not (tmp_path / "m.pt").exists()


def test_train_refuses_missing_weights_file(data, tmp_path, caplog):
    labeled, _ = data
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "train",
                "--labeled",
                str(labeled),
                "--arch",
                "resnet18",
                "--weights",
                str(tmp_path / "imagenet.pth"),
                "--out",
                str(tmp_path / "m.pt"),
            ]
        )
    assert code == 1 and "nothing is downloaded" in caplog.text


def _train_args(labeled: Path, unlabeled: Path, out: Path) -> list[str]:
    return [
        "train",
        "--labeled",
        str(labeled),
        "--unlabeled",
        str(unlabeled),
        *TINY,
        "--epochs",
        "2",
        "--batch-size",
        "6",
        "--freeze-batchnorm",
        "--atcon",
        "alternating",
        "--atcon-steps",
        "3",
        "--unlabeled-batch-size",
        "4",
        "--alpha",
        "2",
        # gradient balancing measures each process's own norms (documented), so it is
        # off here; with it on the replicas agree but differ from one process
        "--no-balance-gradients",
        # near-zero gradients (the preservation term at the start, a warming-up ATCON
        # weight) let Adam blow float rounding up to visible size; keep them out
        "--preserve-weight",
        "0",
        "--atcon-warmup",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--seed",
        "3",
    ]


def test_two_process_data_parallel_training_equals_one_process(data, tmp_path):
    labeled, unlabeled = data
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    parallel = tmp_path / "parallel.pt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "service.cli",
        *_train_args(labeled, unlabeled, parallel),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = tmp_path / "single.pt"
    assert main(_train_args(labeled, unlabeled, single)) == 0

    parallel_model, parallel_info = load_checkpoint(parallel)
    single_model, single_info = load_checkpoint(single)
    assert parallel_info.metrics["world_size"] == 2 and single_info.metrics["world_size"] == 1
    assert parallel_info.metrics["replica_max_abs_diff"] == 0.0  # the two replicas agree
    assert (
        parallel_info.metrics["atcon_labeled_steps"] == single_info.metrics["atcon_labeled_steps"]
    )
    # one process on half the batch: what a run that did not share its batch would give
    local = tmp_path / "local.pt"
    args = _train_args(labeled, unlabeled, local)
    args[args.index("--batch-size") + 1] = "3"
    assert main(args) == 0

    start = _flat(build_start_weights())
    single_weights = _flat(single_model.state_dict())
    moved = (single_weights - start).norm()
    differ = (_flat(parallel_model.state_dict()) - single_weights).norm()
    unshared = (_flat(load_checkpoint(local)[0].state_dict()) - single_weights).norm()
    # equal up to float rounding (which Adam amplifies where a gradient is near zero)
    assert differ < 1e-3 * moved
    assert unshared > 0.1 * moved


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [v.double().flatten() for k, v in sorted(state.items()) if v.is_floating_point()]
    )


def build_start_weights() -> dict[str, torch.Tensor]:
    from models.backbones import build_backbone

    torch.manual_seed(3)
    return build_backbone("resnet18_slim", 2, width=4).state_dict()


def test_train_keeps_the_supervised_model_when_atcon_fails(data, tmp_path, caplog):
    labeled, unlabeled = data
    out = tmp_path / "model.pt"
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "train",
                "--labeled",
                str(labeled),
                "--unlabeled",
                str(unlabeled),
                *TINY,
                "--epochs",
                "2",
                "--atcon",
                "combined",
                "--atcon-steps",
                "4",
                "--atcon-lr",
                "1e30",
                "--no-collapse-guard",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
    assert code == 1
    assert "loss became" in caplog.text and "holds the supervised model" in caplog.text
    _, info = load_checkpoint(out)
    assert "finetune" not in info.config and "loss became" in info.metrics["atcon_error"]
    assert all(math.isfinite(t) for t in info.thresholds)


def _one_pixel_checkpoint(path: Path) -> Path:
    """A ResNet with the full stride-32 stem at 32 px: its layer4 maps are 1x1."""
    from models.backbones import build_backbone
    from models.checkpoint import CheckpointInfo, save_checkpoint

    torch.manual_seed(0)
    options = {"width": 4, "small_input": False}
    model = build_backbone("resnet18_slim", len(NAMES), **options)
    info = CheckpointInfo(
        arch="resnet18_slim", class_names=list(NAMES), input_size=32, arch_kwargs=options
    )
    save_checkpoint(path, model, info)
    return path


def test_finetune_refuses_one_pixel_maps_up_front_and_names_the_fix(data, tmp_path, caplog):
    _, unlabeled = data
    checkpoint = _one_pixel_checkpoint(tmp_path / "small.pt")
    out = tmp_path / "tuned.pt"
    base = ["finetune", "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]
    with caplog.at_level(logging.ERROR):  # the unlabeled folder is not even read
        code = main([*base, "--unlabeled", str(tmp_path / "missing")])
    assert code == 1 and not out.exists()
    assert "'layer4' is 1x1 for 32x32" in caplog.text and "--layer layer3" in caplog.text
    assert "loss became" not in caplog.text  # not the NaN at step 0 of before
    code = main([*base, "--unlabeled", str(unlabeled), "--layer", "layer3", "--steps", "1"])
    assert code == 0 and out.exists()


def test_finetune_method_recalibrate_needs_in_domain_frames_and_moves_only_biases(
    data, trained, tmp_path, capsys, caplog
):
    _, unlabeled = data
    out = tmp_path / "night.pt"
    base = ["finetune", "--checkpoint", str(trained), "--unlabeled", str(unlabeled)]
    base += ["--out", str(out), "--no-progress", "--method", "recalibrate"]
    with caplog.at_level(logging.ERROR):
        assert main(base) != 0
    assert "--method recalibrate needs --in-domain DIR" in caplog.text and not out.exists()
    in_domain = write_unlabeled_dir(tmp_path / "day", 10)
    assert main([*base, "--in-domain", str(in_domain)]) == 0
    model, info = load_checkpoint(out)
    parent_model, parent = load_checkpoint(trained)
    assert info.config["adapt"]["method"] == "recalibrate"
    assert info.metrics["frames"] == {"unlabeled": 12, "labeled": 0, "in_domain": 10}
    assert info.thresholds == parent.thresholds and info.parent_hash == parent.sha256
    assert torch.equal(model.fc.weight, parent_model.fc.weight)
    assert json.loads(capsys.readouterr().out)["metrics"]["method"] == "recalibrate"
    bad = ["finetune", "--checkpoint", str(trained), "--unlabeled", str(unlabeled)]
    with caplog.at_level(logging.ERROR):
        assert main([*bad, "--out", str(tmp_path / "x.pt"), "--method", "magic"]) != 0
    assert "'+'-joined set" in caplog.text and not (tmp_path / "x.pt").exists()
    with caplog.at_level(logging.ERROR):
        code = main([*bad, "--out", str(tmp_path / "y.pt"), "--method", "supervised"])
    assert code != 0 and "--method supervised needs --labeled DIR" in caplog.text
