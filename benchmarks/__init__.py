"""Benchmarks beside the library: commands that print figures, never imported by research code.

* `speed.py`: epochs, validation, seeds and whole runs of the MNIST default
  (`python -m experiments.benchmark` runs it);
* `floor.py`: the step's matmuls alone, and the step built up from them;
* `processes.py`: K seeds over several processes against one process;
* `search.py`: the gallery search against faiss (flat, HNSW, IVF);
* `omniglot_step.py`: what an Omniglot pair step costs, piece by piece;
* `conv4_stages.py`: the conv4 step stage by stage, and in bfloat16;
* `losses.py`: each batch and proxy loss against the step it trains;
* `retrieval_pml.py`: the retrieval metrics against pytorch-metric-learning's;
* `loss_study.py`: one run per loss or setting, tabulated on validation;
* `lake_runs.py`: one-shot runs in Lake et al.'s format from the evaluation alphabets.
"""
