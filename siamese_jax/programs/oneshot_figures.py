"""The pictures of docs/oneshot.md: a few 20-way episodes, and the map of one unseen alphabet.

    python -m experiments.oneshot_figures --workdir W [--out DIR] [--alphabet NAME]

`episodes.png`: 6 episodes of the evaluation alphabets, the right candidate
green, a wrong choice red. `alphabet_map.png`: one evaluation alphabet on
its embeddings' first two principal components. Both go to --out (default
the workdir).
"""

import argparse
import os

import jax
import numpy as np

from siamese_jax import cli, load_trained, plots
from siamese_jax.core.errors import DataError
from siamese_jax.core.files import check_output
from siamese_jax.core.integers import count_arg
from siamese_jax.data.preprocess import preprocess_images
from siamese_jax.evaluation.oneshot import episode_accuracy, episodes


def main(argv):
  parser = argparse.ArgumentParser(
    prog=cli.prog("oneshot_figures"), description=__doc__.splitlines()[0]
  )
  parser.add_argument("--workdir", required=True, help="a finished Omniglot run")
  parser.add_argument("--out", default=None, help="where the PNGs go (default: the workdir)")
  parser.add_argument("--alphabet", default=None, help="the evaluation alphabet to map")
  parser.add_argument("--episodes", type=count_arg(1), default=6, help="episodes to draw")
  args = parser.parse_args(argv)
  check_output(args.out, "--out", folder=True)
  out = args.out or args.workdir
  os.makedirs(out, exist_ok=True)
  model = load_trained(args.workdir)
  data = model.load_data()
  if data.test_groups is None:
    raise DataError(f"{data.source}: not Omniglot; its test split has no alphabets.")
  seen = preprocess_images(data.test_images, model.config)
  emb = model.embed(data.test_images)
  drawn = episodes(
    jax.random.key(0), data.test_labels, data.test_groups, data.test_drawers,
    ways=20, shots=1, count=args.episodes,
  )  # fmt: skip
  if drawn is None:
    raise DataError(
      f"{data.source}: no evaluation alphabet holds 20 characters with 2 drawers in common, so "
      "no 20-way 1-shot episode can be drawn. Use the official images_evaluation."
    )
  support, query = drawn
  d = ((emb[query[:, 0]][:, None] - emb[support[:, :, 0]]) ** 2).sum(-1)
  acc = episode_accuracy(emb, support, query).mean()
  path = plots.oneshot_episodes(
    seen, support, query, d.argmin(1), os.path.join(out, "episodes.png"),
    title=f"20-way 1-shot episodes of unseen alphabets, one query of 20 shown each (all "
    f"{20 * args.episodes} queries of these episodes: {100 * acc:.0f}% right)",
  )  # fmt: skip
  print(f"episodes: {path}")
  names = data.group_names
  groups = np.unique(data.test_groups)
  if args.alphabet is None:
    group = groups[0]
  elif args.alphabet in names:
    group = names.index(args.alphabet)
  else:
    choices = ", ".join(names[g] for g in groups)
    raise DataError(f"--alphabet {args.alphabet!r}: no such evaluation alphabet; one of {choices}.")
  m = data.test_groups == group
  x = emb[m] - emb[m].mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  path = plots.alphabet_map(
    x @ vt[:2].T, data.test_labels[m], seen[m], os.path.join(out, "alphabet_map.png"),
    title=f"{names[group]} (never trained on): {m.sum()} drawings of "
    f"{len(np.unique(data.test_labels[m]))} characters, first 2 principal components",
  )  # fmt: skip
  print(f"alphabet map: {path}")
