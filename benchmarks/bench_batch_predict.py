"""Issue 7's batch pre-annotation, measured: N phantom DICOMs at 512 x 512 through ``cervkit predict``.

Writes N X-ray-style phantoms (:func:`cervkit.data.synth.phantom.make_phantom`) as DX DICOM files with a fake
patient name and ID each (written once into ``<out>/inputs``, reused later), then runs
:func:`cervkit.inference.predict.predict_files` on the folder in this process, as ``python -m cervkit
predict`` does, while a sampler thread records every 0.5 s the process's resident memory
(RSS) and how many rows ``predictions.csv`` holds. It reports:

* images per second over the whole batch (wall time: reading, model, writing mask, overlay and
  CSV row) and the mean model time per image (the ``seconds`` column);
* peak RSS, and RSS after 10 %, 25 %, 50 %, 75 % and 100 % of the images: memory is flat when
  the growth from 25 % to 100 % is small against the model's own footprint (``--max-growth-mb``
  is the check, default 50 MB);
* that no output file, CSV cell or printed line carries a phantom's patient name or ID.

    OMP_NUM_THREADS=2 python benchmarks/bench_batch_predict.py --run outputs/runs/phantom_levels --n 1000

Results: ``<out>/memory.csv`` (the samples), ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

PATIENT = "BENCH^PATIENT{k:05d}"
PATIENT_ID = "BENCHID{k:05d}"


def write_dicom_phantoms(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """Write ``n`` X-ray phantoms as 16-bit DX DICOM files (skipping files already there)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from cervkit.data.synth.phantom import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    paths = []
    for k in range(n):
        path = folder / f"img_{k:05d}.dcm"
        paths.append(path)
        if path.exists():
            continue
        ph = make_phantom("xray", seed=seed + k, size=(size, size))
        ds = template.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Modality = "DX"
        ds.PatientName, ds.PatientID = PATIENT.format(k=k), PATIENT_ID.format(k=k)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Rows, ds.Columns = size, size
        ds.PixelSpacing = [float(v) for v in ph.spacing_mm]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        for tag in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            if tag in ds:
                delattr(ds, tag)
        ds.PixelData = np.round(ph.image * 4095).astype(np.uint16).tobytes()
        tmp = path.with_suffix(".tmp")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    return paths


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def count_rows(csv: Path) -> int:
    """Complete data rows in a CSV being appended to (0 when absent)."""
    try:
        with open(csv, "rb") as handle:
            return max(handle.read().count(b"\n") - 1, 0)
    except FileNotFoundError:
        return 0


def sample_memory(csv: Path, stop: threading.Event, samples: list[tuple[float, float, int]]) -> None:
    """Append (seconds, RSS MB, rows done) every 0.5 s until ``stop``."""
    start = time.perf_counter()
    while not stop.is_set():
        samples.append((time.perf_counter() - start, rss_mb(), count_rows(csv)))
        stop.wait(0.5)
    samples.append((time.perf_counter() - start, rss_mb(), count_rows(csv)))


def rss_at(memory: pd.DataFrame, fraction: float, n: int) -> float:
    """RSS of the first sample taken when at least ``fraction`` of the ``n`` rows were done."""
    reached = memory[memory["rows"] >= fraction * n]
    return float(reached["rss_mb"].iloc[0]) if len(reached) else float("nan")


def leaked_identifiers(out: Path, n: int, printed: str) -> list[str]:
    """Files (or 'stdout') under ``out`` whose bytes contain any phantom's patient name or ID."""
    needles = [b"BENCHID", b"BENCH^PATIENT", b"PATIENT0"]
    found = [str(p) for p in sorted(out.rglob("*")) if p.is_file() and any(s in p.read_bytes() for s in needles)]
    if any(s.decode() in printed for s in needles):
        found.append("stdout")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run folder (a cascade on X-ray phantoms fits best)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", default="outputs/bench_batch_predict")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-growth-mb", type=float, default=50.0, help="allowed RSS growth from 25 %% to 100 %%")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import contextlib
    import io

    from cervkit.inference.predict import predict_files
    from cervkit.inference.registry import load_predictor

    out = Path(args.out)
    start = time.perf_counter()
    inputs = write_dicom_phantoms(out / "inputs", args.n, args.size)
    print(f"{len(inputs)} DICOM inputs in {out / 'inputs'} ({time.perf_counter() - start:.0f} s)")
    predictor = load_predictor(args.run)
    pred_dir = out / f"predictions_{args.n}"
    if pred_dir.exists():  # this benchmark's own scratch output: a stale predictions.csv would fool the sampler
        shutil.rmtree(pred_dir)
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(pred_dir / "predictions.csv", stop, samples), daemon=True)
    rss_before = rss_mb()
    printed = io.StringIO()
    sampler.start()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        table = predict_files(predictor, [out / "inputs"], pred_dir, overwrite=True, progress=False, run=args.run)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    memory = pd.DataFrame(samples, columns=["seconds", "rss_mb", "rows"])
    memory.to_csv(out / f"memory_{args.n}.csv", index=False)
    ok = table[table["status"] == "ok"]
    n = len(table)
    at = {f"rss_mb_at_{int(f * 100)}pct": rss_at(memory, f, n) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    growth = at["rss_mb_at_100pct"] - at["rss_mb_at_25pct"]
    leaks = leaked_identifiers(pred_dir, n, printed.getvalue())
    summary = {"run": str(args.run), "n": n, "ok": len(ok), "size": args.size, "threads": args.threads,
               "cpu_count": os.cpu_count(), "wall_seconds": round(wall, 1), "images_per_second": round(n / wall, 2),
               "model_seconds_mean": round(float(ok["seconds"].mean()), 4),
               "rss_mb_before": round(rss_before, 1), "rss_mb_peak": round(float(memory["rss_mb"].max()), 1),
               **{k: round(v, 1) for k, v in at.items()}, "rss_growth_25_to_100_mb": round(growth, 1),
               "memory_flat": bool(growth <= args.max_growth_mb), "identifier_leaks": leaks,
               "vertebrae_per_image_mean": round(float(ok["n_vertebrae"].mean()), 2)}
    (out / f"summary_{args.n}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0 if summary["memory_flat"] and not leaks and len(ok) == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
