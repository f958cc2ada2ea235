"""CPU seconds of the training data reads: a worker's resident shard load and one streaming epoch over it.

Run:  PYTHONPATH=src python benchmarks/dataset_read.py --rows 1000000 [--workers 2] [--s3]
Compare two trees (e.g. before a change): PYTHONPATH=/other/src python benchmarks/dataset_read.py --repo /other
``--s3`` puts the dataset on moto's S3 server on loopback (as the tests do). Best of 3, rank 0's shard.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    repo = Path(args.repo)
    sys.path.insert(0, str(repo))  # tests.datasets of that tree
    import torch

    from modelsvc.config import load_settings
    from modelsvc.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from modelsvc.training.loop import StreamingBatches, read_split, shard_bounds
    from modelsvc.training.preprocessing import Preprocessor
    from tests.datasets import write_synthetic_dataset

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="modelsvc-read-"))
    with contextlib.ExitStack() as stack:
        over = {}
        if args.s3:
            from modelsvc import storage
            from tests.fixtures.s3 import running_s3

            s3 = stack.enter_context(running_s3(root))
            os.environ.update(s3.env())
            storage.clear_cache()
            over = {"datasets": f"s3://{s3.create_bucket('read')}/datasets"}
        settings = load_settings(repo / "configs", paths={"root": str(root), **over})
        manifest, df = write_synthetic_dataset(settings, rows=args.rows)
        source = manifest if getattr(manifest, "files", None) else manifest.data_path  # older trees: one file
        train = df[df["split"] == "train"]
        pre = Preprocessor.fit(train, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
        columns = [*pre.input_columns, "is_clicked"]
        start, stop = shard_bounds(len(train), 0, args.workers)
        best = {"resident": float("inf"), "streaming": float("inf")}
        for _ in range(3):
            t = time.process_time()
            read_split(source, "train", columns, start, stop)
            best["resident"] = min(best["resident"], time.process_time() - t)
            batches = StreamingBatches(source, pre, "is_clicked", start=start, stop=stop, batch_size=4096, seed=0,
                                       rank=0, device=torch.device("cpu"))
            t = time.process_time()
            assert sum(int(y.shape[0]) for _, _, y in batches.epoch(0)) == stop - start
            best["streaming"] = min(best["streaming"], time.process_time() - t)
    files = len(getattr(manifest, "files", None) or [1])
    print(f"{repo.name}: rows={args.rows} files={files} workers={args.workers} dataset on "
          f"{over.get('datasets', 'local disk')}: CPU-s resident {best['resident']:.3f}, "
          f"streaming epoch {best['streaming']:.3f}")


if __name__ == "__main__":
    main()
