"""The losses side by side: one run per loss (or setting), then a table chosen on validation.

    python -m benchmarks.loss_study --experiment omniglot --data-dir DIR --out OUT \\
        [--losses supcon,prototypical,...] [--variants 'name:--flag v ...;...'] -- FLAGS...

Each loss (or each named variant of flags) trains with the same FLAGS (after
`--`), in its own process and its own `OUT/<name>/` workdir, one after the
other; a finished one is read, not run again, so the study resumes. Then the
table: the validation figure each was chosen by, beside the test figures that
are reported but never chosen by (Musgrave et al. 2020's point): for Omniglot
20-way 1-shot on the held-out background alphabets (validation) and on the
evaluation alphabets (test); for MNIST with `--train-classes`, MAP@R and P@1
of the unseen classes. `OUT/study.json` keeps the table.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from siamese_jax.core.files import atomic_write_json
from siamese_jax.losses import LOSSES

COLUMNS = {  # experiment -> [(results.json key, header)], validation first
  "omniglot": [
    ("val_oneshot_20way_1shot", "val 20-way 1-shot"),
    ("test_oneshot_20way_1shot", "test 20-way 1-shot"),
    ("test_oneshot_5way_1shot", "test 5-way 1-shot"),
    ("test_oneshot_20way_5shot", "test 20-way 5-shot"),
    ("test_map_at_r", "test MAP@R"),
  ],
  "mnist_siamese": [
    ("test_unseen_map_at_r", "unseen MAP@R"),
    ("test_unseen_precision_at_1", "unseen P@1"),
    ("test_seen_map_at_r", "seen MAP@R"),
    ("test_map_at_r", "all MAP@R"),
  ],
}


def main(argv) -> int:
  if "--" in argv:
    split = argv.index("--")
    argv, flags = argv[:split], argv[split + 1 :]
  else:
    flags = []
  parser = argparse.ArgumentParser(prog="python -m benchmarks.loss_study", description=__doc__)
  parser.add_argument("--experiment", choices=sorted(COLUMNS), default="omniglot")
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--out", required=True)
  pk_losses = [name for name, loss in LOSSES.items() if loss.sampler == "pk"]
  parser.add_argument("--losses", default=",".join(pk_losses), help="comma-separated")
  parser.add_argument(
    "--variants",
    default=None,
    help="instead of --losses: 'name:FLAGS;name:FLAGS', each run with FLAGS added",
  )
  args = parser.parse_args(argv)
  if args.variants:
    runs = [v.split(":", 1) for v in args.variants.split(";") if v.strip()]
    runs = [(name.strip(), shlex.split(extra)) for name, extra in runs]
  else:
    runs = [(loss, ["--loss", loss]) for loss in args.losses.split(",")]
    unknown = [name for name, _ in runs if name not in LOSSES]
    if unknown:
      parser.error(f"--losses: unknown {', '.join(unknown)}; known: {', '.join(LOSSES)}")
  data = ["--data-dir", args.data_dir] if args.data_dir else []
  rows = []
  for name, extra in runs:
    workdir = os.path.join(args.out, name)
    results = os.path.join(workdir, "results.json")
    if not os.path.exists(results):
      command = [sys.executable, "-m", f"experiments.{args.experiment}", *data,
                 "--workdir", workdir, "--no-progress", *flags, *extra]  # fmt: skip
      print("$", shlex.join(command[1:]), flush=True)
      t0 = time.perf_counter()
      child = subprocess.Popen(command)
      _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
      if os.waitstatus_to_exitcode(status) != 0:
        print(f"{name}: the run failed; see above.", file=sys.stderr)
        continue
      print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
      atomic_write_json(
        os.path.join(workdir, "peak_rss.json"), {"peak_rss_mib": usage.ru_maxrss / 1024}
      )
    with open(results) as f:
      r = json.load(f)
    rss = os.path.join(workdir, "peak_rss.json")
    peak = json.load(open(rss))["peak_rss_mib"] if os.path.exists(rss) else None
    rows.append({"name": name, "flags": extra, "total_seconds": r.get("total_seconds"),
                 "peak_rss_mib": peak, **{k: r.get(k) for k, _ in COLUMNS[args.experiment]}})  # fmt: skip
  columns = COLUMNS[args.experiment]
  print("| run | " + " | ".join(h for _, h in columns) + " | minutes | peak RSS |")
  print("| --- " * (len(columns) + 3) + "|")
  for row in sorted(rows, key=lambda r: -(r[columns[0][0]] or 0)):
    cells = [f"{100 * row[k]:.2f} %" if row[k] is not None else "-" for k, _ in columns]
    peak = f"{row['peak_rss_mib']:.0f} MiB" if row["peak_rss_mib"] else "-"
    print(
      f"| {row['name']} | " + " | ".join(cells) + f" | {row['total_seconds'] / 60:.1f} | {peak} |"
    )
  os.makedirs(args.out, exist_ok=True)
  atomic_write_json(os.path.join(args.out, "study.json"), {"flags": flags, "rows": rows})
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
