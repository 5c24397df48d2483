r"""Full finetuning of the SeLaVi audio encoder on ESC-50, its 5 folds (the XDC paper's audio
benchmark; SeLaVi itself reports none), on the same finetuning protocol as the video datasets.

    for fold in 1 2 3 4 5; do python -m avssl.data_prep.make_records --dataset=esc50 \
        --input=~/ESC-50/meta/esc50.csv --video_dir=~/ESC-50/audio --fold=$fold --sample_rate=24000 \
        --val_fraction=0.1 --output_dir=~/records/esc50_$fold; done
    python -m avssl.main --mode=finetune --config=configs/finetune_esc50.py \
        --workdir=runs/finetune_esc50 --config.init_from=runs/selavi_vggsound

The papers give no audio finetuning recipe for a SeLaVi encoder, so these are this project's choices:
  - the optimiser, the learning rates (head 0.0025, encoder ×0.1), weight decay, batch 32, warm-up and
    step decay, 12 epochs of 10 passes: the video protocol's (`configs/finetune_ucf101.py`);
  - the input: SeLaVi's pretraining front end (24 kHz `logfbank`, 257 filters, 10 ms hop, volume
    jitter ×U(0.9, 1.1)), so the pretrained encoder sees the features it learnt on, over the whole
    5 s clip (257 × 499) in training and test, one view per clip. XDC evaluates 10 uniformly sampled
    2 s clips; ESC-50 clips are short and often silent after the event, and audio-only records carry
    no frames to place shorter windows by, so the whole clip is the one window every clip shares;
  - a 10 % validation split per fold (`--val_fraction`) for the checkpoint selection.
ESC-50's 5 folds and the averaging over them are the dataset's and XDC's (Table 7 b). Arguments as
`configs/finetune_ucf101.py` (`records`, `folds`, `init_from`, `frozen`, `tiny`).
"""

import ml_collections

from avssl import config_lib
from configs import common, finetune_ucf101


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, frozen=False,
                             records='~/records/esc50_{fold}', folds=5,
                             init_from='runs/selavi_vggsound')
  config = finetune_ucf101.build(modality='audio', records=arg.records, folds=arg.folds,
                                 init_from=arg.init_from, frozen=arg.frozen)
  config.data.update(dict(audio_seconds=5.0, eval_clips=1, eval_crops=1))  # The whole clip.
  config = finetune_ucf101.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
