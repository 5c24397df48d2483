r"""Full finetuning of the SeLaVi video encoder on HMDB51, its 3 official splits (SeLaVi Table A.3;
the protocol of `configs/finetune_ucf101.py`).

    for fold in 1 2 3; do python -m avssl.data_prep.make_records --dataset=hmdb51 \
        --input=~/testTrainMulti_7030_splits --video_dir=~/hmdb51 --fold=$fold --val_fraction=0.1 \
        --output_dir=~/records/hmdb51_$fold; done
    python -m avssl.main --mode=finetune --config=configs/finetune_hmdb51.py \
        --workdir=runs/finetune_hmdb51 --config.init_from=runs/selavi_vggsound

Each fold trains on its 'train' split, selects the epoch on 'val' (carved out of train by
make_records), and reports only that epoch on 'test'; `finetune.json` has the mean ± std over folds.
Arguments: `records` (a pattern with {fold}), `folds`, `init_from` (the pretraining run's workdir;
'' trains from scratch), `frozen` (the linear probe: encoder and its BatchNorm statistics fixed, head
only), `tiny` (CPU-test size).
"""

import ml_collections

from avssl import config_lib
from configs import common, finetune_ucf101


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, frozen=False,
                             records='~/records/hmdb51_{fold}', folds=3,
                             init_from='runs/selavi_vggsound')
  config = finetune_ucf101.build(modality='video', records=arg.records, folds=arg.folds,
                                 init_from=arg.init_from, frozen=arg.frozen)
  config = finetune_ucf101.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
