"""IICL on avsynth, the built-in demo data, with Table II's ablation as `variant`: C = 10 clusters of
10 pair-confusable classes (a class's look is shared with one other class and its sound with
another), small encoders and clips sized for a laptop CPU.

    python -m avssl.main --config=configs/iicl_demo.py:variant=ins_clu --workdir=runs/demo/iicl_ins_clu
    python -m avssl.main --config=configs/iicl_demo.py:variant=ins --workdir=runs/demo/iicl_ins
    python -m avssl.main --config=configs/iicl_demo.py:variant=clu --workdir=runs/demo/iicl_clu
    python -m avssl.main --config=configs/iicl_demo.py:variant=ins_clu --workdir=runs/demo/iicl_ins_clu \\
        --mode=eval   # and alike for the others; --mode=label writes labels.csv (not for 'ins')
    python -m avssl.main --config=configs/iicl_demo.py:variant=ins_clu,reading=per_clip \\
        --workdir=runs/demo/iicl_ins_clu_per_clip   # and alike: each clip's own pair only
    python -m avssl.main --config=configs/iicl_demo.py:variant=ins_clu,depth=0 \\
        --workdir=runs/demo/iicl_ins_clu_depth0   # and alike: the same without co-attention

`ins_clu`: L_ins alone for the first 4 epochs, then L_ins + 0.5·L_clu (Eq. 7); `ins`: L_ins alone,
its clusters from k-means in the instance space; `clu`: L_clu alone from the start. `depth` is the
number of co-attention blocks (the paper's 1; 0 for none, the heads on the pooled encoder features);
`reading` which clips meet in it: `pairwise` (every video with every audio of the batch, the default)
or `per_clip` (each clip's own pair only, whose contrast has a shortcut: the README's IICL section has
the numbers and why).
Each run's `eval/method.md` has Table II (NMI and accuracy per view) and, with L_ins, Table III
(cross-modal mAP).
The records are those of `configs/selavi_demo.py` (runs/demo/records, made by `scripts/demo.sh`).
`:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, iicl_kinetics

VARIANTS = {'ins_clu': ('ins', 'clu'), 'ins': ('ins',), 'clu': ('clu',)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, variant='ins_clu', depth=1,
                             reading='pairwise',
                             records='runs/demo/records', clusters=10)
  if arg.variant not in VARIANTS:
    raise ValueError(f'variant={arg.variant!r} is not one of {sorted(VARIANTS)}')
  config = iicl_kinetics.get_config()
  config.data.dir = arg.records
  config.iicl.update(dict(num_clusters=arg.clusters, init_epochs=4.0))
  config.total_epochs = 10.0
  config.batch_size = 64
  config.log_every_steps = 20
  config.checkpoint_every_epochs = 5.0
  config.schedule.base_lr = 1e-3  # Twice the paper's 5e-4: 10 epochs here, not 600.
  common.demo_inputs(config, max_resize=56)  # No scale jitter: the paper names no augmentation.
  config.iicl.co_attention.update(dict(depth=arg.depth, width=64, num_heads=4, reading=arg.reading))
  config.iicl.losses = VARIANTS[arg.variant]
  if arg.variant == 'clu':
    config.iicl.init_epochs = 0.0
  config.evaluation.run = ('method', 'retrieval')
  config.evaluation.batch_size = 64
  config.evaluation.retrieval.clips = 3
  config = iicl_kinetics.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
