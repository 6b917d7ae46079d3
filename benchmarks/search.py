"""The gallery search against faiss: exact blocked search, faiss flat, HNSW, IVF.

    python -m benchmarks.search [--gallery 1000000] [--queries 10000] [--dim 128] [--k 10]
        [--backends exact,faiss-flat,faiss-hnsw,faiss-ivf] [--budget-mib 256] [--json OUT]

Synthetic embeddings (standard normal, seed 0), the same for every backend.
Each backend runs in a subprocess of its own, one after the other, so its
peak RSS is its own: the process makes the gallery (its float32 bytes are
printed beside), builds the index, then times the search. Recall@k is the
share of the exact search's k neighbours each backend finds. Needs faiss-cpu
for the faiss rows (`pip install -e '.[faiss]'`).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from siamese_jax import cli
from siamese_jax.recognition.index import BACKENDS


def _data(n: int, q: int, dim: int):
  rng = np.random.default_rng(0)
  return (
    rng.standard_normal((n, dim), dtype=np.float32),
    rng.standard_normal((q, dim), dtype=np.float32),
  )


def one_backend(args) -> dict:
  """Runs in the subprocess: build, warm up, time the search; ids to a file."""
  from siamese_jax.recognition.index import Index

  gallery, queries = _data(args.gallery, args.queries, args.dim)
  labels = np.zeros(len(gallery), np.int64)
  t = time.perf_counter()
  index = Index.from_embeddings(
    gallery, labels, backend=args.backend, budget_bytes=args.budget_mib * 2**20
  )
  del gallery  # the index holds its own copy; what remains is the index's
  index.search(queries[:64], args.k)  # compiles (exact) or builds (faiss)
  build = time.perf_counter() - t
  t = time.perf_counter()
  _, ids = index.search(queries, args.k)
  seconds = time.perf_counter() - t
  np.save(args.ids_out, ids)
  return {
    "backend": args.backend,
    "build_seconds": build,
    "search_seconds": seconds,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__)
  parser.add_argument("--gallery", type=int, default=1_000_000)
  parser.add_argument("--queries", type=int, default=10_000)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--budget-mib", type=int, default=128)
  parser.add_argument("--backends", default="exact,faiss-flat,faiss-hnsw,faiss-ivf")
  parser.add_argument("--json", default=None)
  parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)  # the subprocess's
  parser.add_argument("--ids-out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = [b for b in args.backends.split(",") if b not in BACKENDS]
  if unknown:
    parser.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}.")
  if (
    min(args.gallery, args.queries, args.dim, args.k, args.budget_mib) < 1 or args.k > args.gallery
  ):
    parser.error(
      "--gallery, --queries, --dim, --k and --budget-mib must be >= 1, --k <= --gallery."
    )
  if args.backend is not None:
    print(json.dumps(one_backend(args)))
    return 0
  gallery_mib = args.gallery * args.dim * 4 / 2**20
  print(f"gallery {args.gallery:,} x {args.dim} float32 = {gallery_mib:.0f} MiB, "
        f"{args.queries:,} queries, k = {args.k}", flush=True)  # fmt: skip
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for backend in args.backends.split(","):
      out = os.path.join(tmp, f"{backend}.npy")
      cmd = [sys.executable, "-m", "benchmarks.search", "--backend", backend, "--ids-out", out]
      cmd += [f"--{k}={v}" for k, v in (("gallery", args.gallery), ("queries", args.queries),
              ("dim", args.dim), ("k", args.k), ("budget-mib", args.budget_mib))]  # fmt: skip
      proc = subprocess.run(cmd, capture_output=True, text=True)
      if proc.returncode != 0:
        print(f"{backend}: failed\n{proc.stderr.strip().splitlines()[-1]}", flush=True)
        continue
      row = json.loads(proc.stdout.strip().splitlines()[-1])
      row["ids"] = np.load(out)
      rows.append(row)
      print(
        f"{backend:>10}: search {row['search_seconds']:.1f} s, build {row['build_seconds']:.1f} s, "
        f"peak RSS {row['peak_rss_mib']:.0f} MiB",
        flush=True,
      )
  exact = next((r for r in rows if r["backend"] == "exact"), None)
  flat = next((r for r in rows if r["backend"] == "faiss-flat"), None)
  for r in rows:
    if exact is not None:
      found = [len(set(a) & set(b)) for a, b in zip(r["ids"], exact["ids"], strict=True)]
      r["recall_at_k"] = float(np.mean(found)) / args.k
    if flat is not None:
      r["x_faiss_flat"] = r["search_seconds"] / flat["search_seconds"]
  for r in rows:
    print(
      f"{r['backend']:>10}: recall@{args.k} {r.get('recall_at_k', float('nan')):.4f}, "
      f"{r.get('x_faiss_flat', float('nan')):.2f}x faiss-flat's time"
    )
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"gallery_mib": gallery_mib, "rows": [
        {k: v for k, v in r.items() if k != "ids"} for r in rows]}, f, indent=2)  # fmt: skip
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_main(main))
