"""Benchmark: ``atcon detect`` variants against decode-only on the same file, per CPU class.

For a synthetic ward video (640x480, 30 fps, H.264 at about 1 Mbit/s, like a ward
camera), sampled at 2 frames/s and classified by ResNet-18 at 224 px, one run
measures, interleaved round by round (the order rotates each round, so a noisy
neighbour slows every variant alike):

* ``decode``: the same sampler, thread and queue as detection, frames discarded
  (the baseline every ratio is taken against, from the same round);
* ``detect``: :meth:`worker.detection.detector.Detector.detect` with every sample scored (model
  loaded beforehand, as the queue worker keeps it);
* ``gated``: the same with motion gating (:mod:`worker.detection.motion`), default settings;
* ``int8``, ``gated-int8``: the two above scoring with the checkpoint's int8 copy
  (:mod:`worker.detection.int8`; built once into the cache before the rounds, calibrated on
  frames of the video, its check reported; compiled in each child's model load).

Each measurement runs in a fresh process. The report gives per variant the median
of its per-round ratios to decode-only, each round's ratio, the real-time factor,
samples scored, and the breakdown of the last round; the CPU (model, AVX2, AVX-512,
AVX512-BF16, AVX512-VNNI, AMX), the precision chosen, the PyTorch threads (measured
once, as a worker measures them: :mod:`worker.runtime.threads`) and the load average before
and after the run.

``--emulate-avx2`` runs every child with ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` (PyTorch's own kernels and oneDNN's held to AVX2, so no
AVX-512 and no bfloat16): the class of hospital server without bfloat16, emulated
on a newer CPU; the report says so. ``precision=auto`` then picks float32. FFmpeg's
decoder is not held back, so decoding keeps the host's speed.

With ``--compile``, detect scores with the model compiled by ``torch.compile``
(:mod:`worker.detection.compiled`). ``--long-minutes`` adds the peak resident memory of a
detection on a longer video made by remuxing copies of the first.

    python -m bench.video --minutes 10 --repeats 3 --json bench/out/video.json
    python -m bench.video --minutes 2 --long-minutes 0 --emulate-avx2   # AVX2-only class
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["staff_present", "patient_sitting", "bed_exit", "lights_dimmed"]
VARIANTS = ("decode", "detect", "gated", "int8", "gated-int8")
#: the environment that holds PyTorch to AVX2 (no AVX-512, no bfloat16)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="video length")
    parser.add_argument(
        "--long-minutes", type=float, default=0.0, help="long video for memory (0: skip)"
    )
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="PyTorch threads (0: measured, as a worker)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (decode always runs)",
    )
    parser.add_argument(
        "--emulate-avx2",
        action="store_true",
        help="children run with " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()),
    )
    parser.add_argument(
        "--skip-nonref", action="store_true", help="decoder skips B-frames (all variants)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="score with the model compiled by torch.compile"
    )
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every variant")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "cache")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", choices=(*VARIANTS, "compile"), help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    return parser


def cpu_description(emulation: dict[str, str] | None = None) -> dict[str, Any]:
    """The CPU's model name, the instruction sets that matter here, and the emulation:
    ``emulation``, else whichever of :data:`AVX2_ENV`'s variables this process has."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        text = ""
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's entry is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']} model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    emulated = emulation or {k: os.environ[k] for k in AVX2_ENV if k in os.environ}
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": [name for flag, name in _FLAGS.items() if flag in flags],
        "native_bfloat16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "emulation": emulated or None,
    }


# -- inputs --------------------------------------------------------------------------------


def make_video(cache: Path, minutes: float) -> Path:
    """A cached ward video of ``minutes``: 640x480, 30 fps, crf 23, noise 8 (~1 Mbit/s)."""
    from synthetic.synth import SynthConfig, synthesize

    name = f"ward-640x480-30fps-{minutes:g}min"
    path = cache / f"{name}.mp4"
    if not path.is_file():
        config = SynthConfig(
            seconds=60 * minutes, fps=30, width=640, height=480, seed=0, crf=23, noise=8.0
        )
        print(f"synthesising {path.name} ...", file=sys.stderr)
        synthesize(cache, config, name=name, frames=False)
    return path


def concatenate(source: Path, copies: int, target: Path) -> Path:
    """``copies`` back-to-back copies of ``source``'s video stream, remuxed (no re-encoding)."""
    import av

    if target.is_file():
        return target
    tmp = target.with_suffix(".partial.mp4")
    with av.open(str(tmp), mode="w") as out:
        out_stream = None
        for k in range(copies):
            with av.open(str(source)) as inp:
                stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                assert stream.duration is not None
                offset = k * stream.duration
                for packet in inp.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts = (packet.pts or 0) + offset
                    packet.dts += offset
                    packet.stream = out_stream
                    out.mux(packet)
    tmp.replace(target)
    return target


def make_checkpoint(cache: Path, arch: str, input_size: int) -> Path:
    import torch

    from models.backbones import build_backbone
    from models.checkpoint import CheckpointInfo, save_checkpoint

    path = cache / f"{arch}-{input_size}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        model = build_backbone(arch, len(CLASSES))
        save_checkpoint(path, model, CheckpointInfo(arch, CLASSES, input_size=input_size))
    return path


def int8_copy(args: argparse.Namespace, checkpoint: Path, video: Path) -> dict[str, Any]:
    """The checkpoint's int8 copy (:mod:`worker.detection.int8`), built once into the cache:
    calibrated on 64 frames of the video sampled at 0.5/s, checked on the 64 between."""
    import numpy as np

    from worker.detection.detector import DetectionConfig, Detector
    from worker.detection.int8 import int8_check
    from worker.video.decode import FrameSampler

    check = int8_check(checkpoint)
    if check is not None and check.get("batch_size") == args.batch_size:
        return check
    size = args.input_size
    frames = np.concatenate(
        [b.frames for b in FrameSampler(video, fps=0.5, size=(size, size), batch_size=32)]
    )[:128]
    print("building the int8 copy ...", file=sys.stderr)
    config = DetectionConfig(precision="float32", batch_size=args.batch_size, maps=False)
    return Detector(checkpoint, config=config).build_int8(frames[::2], frames[1::2])


# -- measurements (each in its own process) -------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds this process has used so far, all threads, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from worker.detection.detector import DetectionConfig, Detector
    from worker.detection.motion import GateConfig
    from worker.video.decode import FrameSampler
    from worker.video.prefetch import Prefetcher

    if args.child == "decode":
        cpu = _cpu_s()
        started = time.perf_counter()
        sampler = FrameSampler(
            args.video,
            fps=args.fps,
            size=(args.input_size, args.input_size),
            batch_size=args.batch_size,
            skip_nonref=args.skip_nonref,
        )
        with Prefetcher(sampler, maxsize=4) as batches:
            samples = sum(len(batch) for batch in batches)
        wall = time.perf_counter() - started
        return {
            "wall_s": wall,
            "cpu_s": _cpu_s() - cpu,
            "samples": samples,
            "decoded_frames": sampler.stats.decoded_frames,
            "decode_fps": sampler.stats.decoded_frames / wall,
            "peak_rss_mb": _peak_rss_mb(),
        }
    from worker.detection.detector import cpu_has_native_bfloat16

    precision = args.precision
    if args.child in ("int8", "gated-int8"):
        precision = "int8"
    elif precision == "auto" and args.device in (None, "cpu"):
        # what auto picks without the int8 copy: these variants are the baselines
        precision = "bfloat16" if cpu_has_native_bfloat16() else "float32"
    started = time.perf_counter()
    config = DetectionConfig(
        sample_fps=args.fps,
        batch_size=args.batch_size,
        precision=precision,
        device=args.device,
        skip_nonref=args.skip_nonref,
        compile=args.compile or args.child == "compile",
        gating=GateConfig() if args.child in ("gated", "gated-int8") else None,
    )
    detector = Detector(args.checkpoint, config=config)
    load = time.perf_counter() - started
    if args.child == "compile":
        return {"wall_s": load, "compiled": detector.compiled}
    out = args.cache / f"results-{os.getpid()}"
    cpu = _cpu_s()
    started = time.perf_counter()
    document = detector.detect(args.video, out, overwrite=True)
    wall = time.perf_counter() - started
    cpu = _cpu_s() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "load_s": load,
        "samples": document["sampling"]["samples"],
        "scored": document["gating"]["scored_samples"],
        "gate_reasons": document["gating"]["reasons"],
        "events": len(document["events"]),
        "timings_s": document["timings_s"],
        "precision": document["model"]["precision"],
        "compiled": detector.compiled,
        "device": document["model"]["device"],
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_child(
    args: argparse.Namespace, mode: str, video: Path, checkpoint: Path
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.video",
        "--child",
        mode,
        "--video",
        str(video),
        "--checkpoint",
        str(checkpoint),
        "--fps",
        str(args.fps),
        "--input-size",
        str(args.input_size),
        "--batch-size",
        str(args.batch_size),
        "--precision",
        args.precision,
        "--cache",
        str(args.cache),
        "--torch-threads",
        str(args.torch_threads),
    ]
    if args.device:
        command += ["--device", args.device]
    if args.skip_nonref:
        command.append("--skip-nonref")
    env = dict(os.environ)
    if args.emulate_avx2:
        env.update(AVX2_ENV)
    if args.compile:
        command.append("--compile")
        env["TORCHINDUCTOR_CACHE_DIR"] = str(args.cache / f"inductor-{os.getpid()}")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{mode} run failed with status {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    variants = [v for v in args.variants.split(",") if v and v != "decode"]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    args.cache.mkdir(parents=True, exist_ok=True)
    video = make_video(args.cache, args.minutes)
    checkpoint = make_checkpoint(args.cache, args.arch, args.input_size)
    if not args.torch_threads:
        from worker.runtime.threads import (
            available_cores,
            choose_torch_threads,
            measure_decoder_cores,
        )

        decoder = measure_decoder_cores(video=make_video(args.cache, min(args.minutes, 0.5)))
        args.torch_threads = choose_torch_threads(available_cores(), decoder)
        args.decoder_cores = decoder
    if {"int8", "gated-int8"} & set(variants):
        args.int8_check = int8_copy(args, checkpoint, video)
    try:
        return _measure(args, ["decode", *variants], video, checkpoint)
    finally:
        shutil.rmtree(args.cache / f"inductor-{os.getpid()}", ignore_errors=True)


def _measure(args: argparse.Namespace, variants: list[str], video: Path, checkpoint: Path) -> int:
    seconds = 60 * args.minutes
    load_before = os.getloadavg()
    built = _run_child(args, "compile", video, checkpoint) if args.compile else None
    if built is not None and not built["compiled"]:
        raise SystemExit("the scoring model could not be compiled; see the log above")
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.repeats):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        measured = {}
        for mode in order:
            measured[mode] = _run_child(args, mode, video, checkpoint)
            measured[mode]["load_1min"] = os.getloadavg()[0]
        rounds.append(measured)
    load_after = os.getloadavg()
    decode = [r["decode"] for r in rounds]
    results: dict[str, Any] = {
        "video": {"minutes": args.minutes, "size": "640x480", "fps": 30, "codec": "h264"},
        "sampling_fps": args.fps,
        "arch": args.arch,
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "cpu": cpu_description(AVX2_ENV if args.emulate_avx2 else None),
        "torch_threads": args.torch_threads,
        "decoder_cores_measured": getattr(args, "decoder_cores", None),
        "int8_check": getattr(args, "int8_check", None),
        "load_average": {"before": load_before, "after": load_after},
        "cold_compile_s": built["wall_s"] if built else None,
        "rounds": rounds,
        "decode_only": {
            "wall_s_median": statistics.median(d["wall_s"] for d in decode),
            "decode_fps_median": statistics.median(d["decode_fps"] for d in decode),
            "realtime_factor": seconds / statistics.median(d["wall_s"] for d in decode),
        },
        "variants": {},
    }
    for mode in variants[1:]:  # the first is decode-only, the baseline
        ratios = [r[mode]["wall_s"] / r["decode"]["wall_s"] for r in rounds]
        walls = [r[mode]["wall_s"] for r in rounds]
        last = rounds[-1][mode]
        results["variants"][mode] = {
            "over_decode_median": statistics.median(ratios),
            "round_ratios": ratios,
            "wall_s_median": statistics.median(walls),
            "realtime_factor": seconds / statistics.median(walls),
            "scored": last["scored"],
            "samples": last["samples"],
            "precision": last["precision"],
            "torch_threads": last["torch_threads"],
            "timings_s": last["timings_s"],
            "events": last["events"],
        }
    if args.long_minutes and args.long_minutes > args.minutes:
        copies = max(2, round(args.long_minutes / args.minutes))
        long_video = concatenate(
            video, copies, args.cache / f"{video.stem}-x{copies}{video.suffix}"
        )
        mode = variants[-1]
        long_detect = _run_child(args, mode, long_video, checkpoint)
        short = rounds[-1][mode]
        results["long"] = {"minutes": args.minutes * copies, "variant": mode, "run": long_detect}
        results["peak_rss_long_over_short"] = long_detect["peak_rss_mb"] / short["peak_rss_mb"]
    _print(args, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _print(args: argparse.Namespace, results: dict[str, Any]) -> None:
    cpu = results["cpu"]
    emulation = (
        "emulated on this CPU with " + " ".join(f"{k}={v}" for k, v in cpu["emulation"].items())
        if cpu["emulation"]
        else "as is"
    )
    load = results["load_average"]
    decode = results["decode_only"]
    rows = [
        ("cpu", f"{cpu['model']}, {cpu['cores']} cores; {', '.join(cpu['flags']) or '-'}"),
        ("cpu class", ("AVX2 only, " if cpu["emulation"] else "") + emulation),
        (
            "video",
            f"{args.minutes:g} min 640x480 30 fps H.264, sampled at {args.fps:g}/s; "
            f"{args.arch} @ {args.input_size}px",
        ),
        (
            "torch threads",
            f"{results['torch_threads']}"
            + (
                f" (measured: the decoder keeps {results['decoder_cores_measured']:.2f} cores busy)"
                if results["decoder_cores_measured"] is not None
                else " (given)"
            ),
        ),
        (
            "load average",
            f"{load['before'][0]:.2f} before, {load['after'][0]:.2f} after (1 min)",
        ),
        (
            "decode-only",
            f"{decode['wall_s_median']:.2f} s median ({decode['decode_fps_median']:.0f} "
            f"frames/s; {decode['realtime_factor']:.1f}x real time)",
        ),
    ]
    if results["int8_check"]:
        check = results["int8_check"]
        rows.append(
            (
                "int8 copy",
                f"largest probability change from float32 {check['max_probability_change']:.4f}"
                f" on {check['validation_frames']} frames (target <= {check['target']})",
            )
        )
    for mode, v in results["variants"].items():
        t = v["timings_s"]
        rows.append(
            (
                f"{mode} / decode-only",
                f"{v['over_decode_median']:.2f}x median (rounds "
                + ", ".join(f"{r:.2f}x" for r in v["round_ratios"])
                + f"); {v['realtime_factor']:.1f}x real time; {v['precision']}, "
                f"{v['scored']}/{v['samples']} samples scored",
            )
        )
        rows.append(
            (
                f"  {mode} last round",
                f"model {t['model']:.2f} s, decoder busy {t['decode_busy']:.2f} s, waiting "
                f"{t['decode_wait']:.2f} s, gate {t.get('gate', 0.0):.2f} s, maps "
                f"{t['maps']:.2f} s ({v['events']} events)",
            )
        )
    if "long" in results:
        rows.append(
            (
                f"peak RSS {results['long']['minutes']:g} min",
                f"{results['long']['run']['peak_rss_mb']:.0f} MB "
                f"({results['peak_rss_long_over_short']:.3f}x of short; target <= 1.10x)",
            )
        )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
