"""Embed a split, or your own images, with a trained run (for TensorBoard's projector).

    python -m experiments.embed --workdir W --split test --out DIR [--data-dir D]
    python -m experiments.embed --workdir W --images FOLDER --out DIR

Writes `DIR/embeddings.npy` (float32[N, D]) and `DIR/labels.tsv`. The data
is the run's own unless --data-dir or --tfds-name names another (of the
same image size and classes); --images embeds FOLDER's image files through
the run's input, their names as labels.
"""

import argparse
import io
import os

import numpy as np

from siamese_jax import cli, load_trained
from siamese_jax.core.errors import WorkdirError
from siamese_jax.core.files import atomic_write_bytes, check_output
from siamese_jax.data.images import image_files
from siamese_jax.data.load import TFDS_NAMES


def main(argv):
  parser = argparse.ArgumentParser(prog=cli.prog("embed"), description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("--split", choices=("train", "test"), default="test")
  parser.add_argument("--images", default=None, metavar="FOLDER", help="embed these images instead")
  parser.add_argument("--out", required=True, help="directory for embeddings.npy and labels.tsv")
  parser.add_argument(
    "--data-dir", default=None, help="IDX directory or .npz file (default: the run's own data)"
  )
  parser.add_argument(
    "--tfds-name", choices=TFDS_NAMES, default=None, help="a tfds dataset instead of the run's"
  )
  args = parser.parse_args(argv)
  check_output(args.out, "--out", folder=True)
  if args.images is not None and (args.data_dir or args.tfds_name):
    parser.error("--images embeds your own files; drop --data-dir and --tfds-name with it.")
  model = load_trained(args.workdir)
  if args.images is not None:
    paths = image_files(args.images)
    emb, labels, what = model.embed_files(paths), [os.path.basename(p) for p in paths], "image"
  else:
    data = model.load_data(args.data_dir, tfds_name=args.tfds_name)
    labels = [int(y) for y in getattr(data, f"{args.split}_labels")]
    emb, what = model.embed(getattr(data, f"{args.split}_images")), args.split
  try:
    os.makedirs(args.out, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, emb)
    atomic_write_bytes(os.path.join(args.out, "embeddings.npy"), buf.getvalue())
    tsv = "".join(f"{y}\n" for y in labels)
    atomic_write_bytes(os.path.join(args.out, "labels.tsv"), tsv.encode())
  except OSError as e:
    raise WorkdirError(
      f"Cannot write to {args.out!r} ({e.strerror}). Choose another --out."
    ) from None
  print(f"{len(emb):,} {what} embeddings of size {emb.shape[1]}: {args.out}/embeddings.npy")
  print(f"labels: {args.out}/labels.tsv")
