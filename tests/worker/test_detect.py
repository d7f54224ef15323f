"""The detection pipeline end to end on real synthetic videos and a small real checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import CheckpointError
from models.atcon import attention_consistency
from models.attention import gradcam_and_guided_backprop
from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, file_sha256, save_checkpoint
from models.events import segment_events
from service.cli import main
from synthetic.synth import CLASSES, SynthResult
from tests.worker.detect_inputs import INPUT, make_checkpoint
from tests.worker.media import write_video
from worker._exceptions import CheckpointMismatchError, NotAVideoError, ResultsExistError
from worker.detection.detector import DetectionConfig, Detector
from worker.detection.results import read_events
from worker.video.decode import FrameSampler, extract_frames

EVERYTHING_STAFF = {
    "staff_present": 0.0,
    "patient_sitting": 1.0,
    "bed_exit": 1.0,
    "lights_dimmed": 1.0,
}


@pytest.fixture(scope="module")
def detector(checkpoint: Path) -> Detector:
    return Detector(
        checkpoint, config=DetectionConfig(precision="float32", thresholds=EVERYTHING_STAFF)
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_results_layout_and_schema(
    detector: Detector, ward: SynthResult, checkpoint: Path, tmp_path: Path
) -> None:
    fractions: list[float] = []
    document = detector.detect(ward.video, tmp_path / "out", progress=fractions.append)
    out = tmp_path / "out"
    assert read_events(out) == document
    assert sorted(p.name for p in out.iterdir()) == ["events.json", "maps", "scores.npz"]
    assert leftovers(tmp_path) == []
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)

    assert document["schema_version"] == 1 and document["video_id"] == "ward"
    assert document["video"]["codec"] == "h264"
    assert (document["video"]["width"], document["video"]["height"]) == (160, 120)
    assert document["sampling"]["fps"] == 2.0 and document["sampling"]["samples"] == 20
    assert document["sampling"]["coverage"] == pytest.approx(1.0)
    model = document["model"]
    assert model["checkpoint_sha256"] == file_sha256(checkpoint)
    # one name scheme everywhere: <stem>-<sha12> for a checkpoint that is not a version
    assert model["version"] == f"{checkpoint.stem}-" + file_sha256(checkpoint)[:12]
    assert model["class_names"] == list(CLASSES) and model["precision"] == "float32"
    assert model["thresholds"]["on"] == EVERYTHING_STAFF
    assert document["maps"]["layer"] == "layer4"

    (event,) = document["events"]
    assert event["id"] == "staff_present-1" and event["label"] == "staff_present"
    assert event["start_s"] == 0.0 and event["end_s"] == pytest.approx(10.0, abs=0.11)
    assert -1.0 <= event["attention_consistency"] <= 1.0
    maps = event["maps"]
    for key in ("frame", "gradcam_overlay", "guided_backprop", "masked_frame"):
        image = np.asarray(Image.open(out / maps[key]))
        assert image.shape[:2] == (120, 160), key
    assert np.load(out / maps["gradcam_raw"]).shape == (2, 2)
    assert np.load(out / maps["guided_backprop_raw"]).shape == (3, INPUT, INPUT)
    mask = np.load(out / maps["mask_raw"])
    assert mask.shape == (INPUT, INPUT) and 0.0 <= mask.min() <= mask.max() <= 1.0


def test_scores_and_maps_match_a_direct_computation(
    detector: Detector, ward: SynthResult, checkpoint: Path, tmp_path: Path
) -> None:
    document = detector.detect(ward.video, tmp_path / "out")
    saved = np.load(tmp_path / "out" / "scores.npz")
    batches = list(FrameSampler(ward.video, fps=2.0, size=(INPUT, INPUT)))
    frames = np.concatenate([b.frames for b in batches])
    np.testing.assert_allclose(saved["times"], np.concatenate([b.times for b in batches]))

    model = build_backbone("resnet18", 4)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    model.eval()
    mean = torch.tensor(CheckpointInfo("resnet18", ["x"]).mean).view(1, 3, 1, 1)
    std = torch.tensor(CheckpointInfo("resnet18", ["x"]).std).view(1, 3, 1, 1)

    def normalise(images: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std

    with torch.no_grad():
        expected = model(normalise(frames)).sigmoid().numpy()
    np.testing.assert_allclose(saved["scores"], expected, atol=1e-5)

    (event,) = document["events"]
    peak = int(np.argmin(np.abs(saved["times"] - event["peak_s"])))
    (peak_frame,) = extract_frames(ward.video, [int(saved["pts"][peak])], sizes=[(INPUT, INPUT)])
    x = normalise(peak_frame[0][None])
    cam, guided, _ = gradcam_and_guided_backprop(model, x, torch.tensor([0]))
    consistency = float(attention_consistency(model, x, torch.tensor([0]))[0])
    assert event["attention_consistency"] == pytest.approx(consistency, abs=1e-4)
    out = tmp_path / "out"
    np.testing.assert_allclose(np.load(out / event["maps"]["gradcam_raw"]), cam[0], atol=1e-5)
    np.testing.assert_allclose(
        np.load(out / event["maps"]["guided_backprop_raw"]), guided[0], atol=1e-6
    )


def test_events_agree_with_the_saved_scores(
    checkpoint: Path, ward: SynthResult, tmp_path: Path
) -> None:
    first = Detector(checkpoint, config=DetectionConfig(precision="float32", maps=False))
    first.detect(ward.video, tmp_path / "probe")
    scores = np.load(tmp_path / "probe" / "scores.npz")["scores"]
    medians = {name: float(v) for name, v in zip(CLASSES, np.median(scores, axis=0), strict=True)}
    config = DetectionConfig(
        precision="float32",
        thresholds=medians,
        offset_ratio=1.0,
        min_duration_s=0.0,
        merge_gap_s=0.0,
    )
    document = Detector(checkpoint, config=config).detect(ward.video, tmp_path / "out")
    saved = np.load(tmp_path / "out" / "scores.npz")
    expected = segment_events(
        saved["times"],
        saved["scores"],
        list(CLASSES),
        list(medians.values()),
        offset_ratio=1.0,
        frame_duration_s=0.5,
        duration_s=10.0,
    )
    assert len(expected) >= 4
    got = [
        {k: v for k, v in e.items() if k not in ("maps", "attention_consistency")}
        for e in document["events"]
    ]
    assert got == [e.to_dict() for e in expected]
    assert all(
        Path(tmp_path / "out" / e["maps"]["gradcam_overlay"]).is_file() for e in document["events"]
    )


def test_bfloat16_scoring_stays_close_to_float32(
    checkpoint: Path, ward: SynthResult, tmp_path: Path
) -> None:
    scores = {}
    for precision in ("float32", "bfloat16"):
        config = DetectionConfig(precision=precision, maps=False)
        Detector(checkpoint, config=config).detect(ward.video, tmp_path / precision)
        scores[precision] = np.load(tmp_path / precision / "scores.npz")["scores"]
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], atol=0.02)


# -- atomic results ------------------------------------------------------------------------


def test_not_a_video_leaves_nothing_behind(detector: Detector, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 20)
    with pytest.raises(NotAVideoError):
        detector.detect(text, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_failure_midway_leaves_no_partial_results(
    detector: Detector, ward: SynthResult, tmp_path: Path
) -> None:
    def cancel(fraction: float) -> None:
        if fraction > 0.3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        detector.detect(ward.video, tmp_path / "out", progress=cancel)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_overwriting_keeps_the_old_results(
    detector: Detector, ward: SynthResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    detector.detect(ward.video, out, video_id="first")

    def fail_late(fraction: float) -> None:
        if fraction > 0.95:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        detector.detect(ward.video, out, video_id="second", progress=fail_late, overwrite=True)
    assert read_events(out)["video_id"] == "first"
    assert leftovers(tmp_path) == []


def test_existing_results_need_overwrite(
    detector: Detector, ward: SynthResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    detector.detect(ward.video, out, video_id="first")
    with pytest.raises(ResultsExistError, match="already exists"):
        detector.detect(ward.video, out, video_id="second")
    detector.detect(ward.video, out, video_id="second", overwrite=True)
    assert read_events(out)["video_id"] == "second"
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    detector.detect(ward.video, empty)  # an empty folder is fine to fill
    assert (empty / "events.json").is_file()


# -- checkpoints that do not fit -------------------------------------------------------------


def test_checkpoint_with_other_classes_than_expected(checkpoint: Path) -> None:
    config = DetectionConfig(expected_classes=["staff_present", "fall"])
    with pytest.raises(CheckpointMismatchError, match=r"missing \['fall'\]"):
        Detector(checkpoint, config=config)


def test_threshold_for_a_class_the_checkpoint_lacks(checkpoint: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="does not predict"):
        Detector(checkpoint, config=DetectionConfig(thresholds={"fall": 0.5}))


def test_checkpoint_input_size_too_small_for_maps(tmp_path: Path) -> None:
    small = make_checkpoint(tmp_path / "small.pt", input_size=16)
    with pytest.raises(CheckpointMismatchError, match="1, 1"):
        Detector(small)
    Detector(small, config=DetectionConfig(maps=False))  # scores alone are fine


def test_checkpoint_whose_head_does_not_fit_its_classes(tmp_path: Path) -> None:
    model = build_backbone("resnet18", 4)
    path = tmp_path / "bad.pt"
    save_checkpoint(path, model, CheckpointInfo(arch="resnet18", class_names=["a", "b", "c"]))
    with pytest.raises(CheckpointError, match="do not fit"):
        Detector(path)


# -- awkward videos ----------------------------------------------------------------------------


def test_damaged_video_reports_its_coverage(
    detector: Detector, ward: SynthResult, tmp_path: Path
) -> None:
    data = bytearray(ward.video.read_bytes())
    a, b = int(len(data) * 0.4), int(len(data) * 0.6)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    document = detector.detect(damaged, tmp_path / "out")
    assert 0.3 < document["sampling"]["coverage"] < 0.95
    assert document["events"]


def test_rotated_video_gives_upright_maps(detector: Detector, tmp_path: Path) -> None:
    video = write_video(tmp_path / "phone.mp4", count=20, fps=10, width=64, height=48, rotation=-90)
    document = detector.detect(video, tmp_path / "out")
    assert (document["video"]["width"], document["video"]["height"]) == (48, 64)
    frame = np.asarray(Image.open(tmp_path / "out" / document["events"][0]["maps"]["frame"]))
    assert frame.shape == (64, 48, 3)
    assert frame[:6, -6:].mean() > 200  # the coded top-left marker is now top-right


@pytest.mark.gpu
def test_cuda_agrees_with_cpu(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 means float32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    runs = {"cpu": ("cpu", "float32"), "cuda32": ("cuda", "float32"), "cuda": ("cuda", "auto")}
    documents, scores = {}, {}
    for name, (device, precision) in runs.items():
        config = DetectionConfig(device=device, precision=precision, thresholds=EVERYTHING_STAFF)
        documents[name] = Detector(checkpoint, config=config).detect(ward.video, tmp_path / name)
        scores[name] = np.load(tmp_path / name / "scores.npz")["scores"]
    assert documents["cuda"]["model"]["device"].startswith("cuda")
    assert documents["cuda"]["model"]["precision"] in ("bfloat16", "float16")
    np.testing.assert_allclose(scores["cuda"], scores["cpu"], atol=0.02)
    np.testing.assert_allclose(scores["cuda32"], scores["cpu"], atol=1e-4)
    (cpu_event,), (gpu_event,) = documents["cpu"]["events"], documents["cuda32"]["events"]
    assert gpu_event["peak_s"] == cpu_event["peak_s"]
    assert gpu_event["attention_consistency"] == pytest.approx(
        cpu_event["attention_consistency"], abs=1e-3
    )
    cams = [
        np.load(tmp_path / name / event["maps"]["gradcam_raw"])
        for name, event in (("cpu", cpu_event), ("cuda32", gpu_event))
    ]
    np.testing.assert_allclose(cams[1], cams[0], rtol=1e-3, atol=1e-4)


# -- the command -------------------------------------------------------------------------------


def test_detect_command(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["detect", str(ward.video), "--checkpoint", str(checkpoint), "--out", str(out)]
    thresholds = [f"--threshold={name}={value}" for name, value in EVERYTHING_STAFF.items()]
    code = main([*argv, "--precision", "float32", *thresholds, "--no-maps"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == read_events(out)
    assert [e["label"] for e in printed["events"]] == ["staff_present"]
    assert "maps" not in printed["events"][0] and not (out / "maps").exists()


def test_detect_command_explains_bad_input(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 30)
    argv = ["detect", str(text), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    assert "is a text file, not a video" in caplog.text
    assert not (tmp_path / "o").exists()
