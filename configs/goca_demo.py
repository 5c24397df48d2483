"""GOCA and its Table 1 baselines on the flow-friendly avsynth demo (textured objects whose motion
TV-L1 can follow; 10 classes, 900 train / 100 test clips of 2 s at 10 fps), sized for a laptop CPU:
small encoders, 2 clips of 8 frames + 4 of 4 at 48², 100 prototypes of 128 dimensions, 6 epochs.

    python -m avssl.data_prep.make_synthetic --output_dir=runs/demo/avsynth_flow --num_classes=10 \
        --num_videos=1000 --flow_friendly
    python -m avssl.data_prep.make_records --dataset=folder --input=runs/demo/avsynth_flow --fps=10 \
        --short_side=64 --sample_rate=16000 --min_duration=1.0 --flow --output_dir=runs/demo/records_flow
    python -m avssl.main --config=configs/goca_demo.py:variant=goca --workdir=runs/demo/goca_goca
    python -m avssl.main --config=configs/goca_demo.py:variant=goca --workdir=runs/demo/goca_goca --mode=eval
    python -m avssl.modes.compare --layout=goca SView=runs/demo/goca_sview Avg=runs/demo/goca_avg \
        Sep=runs/demo/goca_sep GOCA=runs/demo/goca_goca

`variant` is goca, sview, avg or sep; the last command puts the runs' retrieval and cluster quality
side by side in Table 1's and Table 6's layouts. In avsynth a class's look (shape, colour, path,
speed) is shared with one other class, so RGB and flow alone top out near R@1 = 50 % on 10 classes.
`:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, goca_ucf101
from avssl.models import encoders


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, variant='goca',
                             records='runs/demo/records_flow')
  config = goca_ucf101.build(records=arg.records, backbone='r2plus1d', variant=arg.variant)
  config.total_epochs = 6.0
  config.batch_size = 32
  config.seed = 0
  config.log_every_steps = 20
  config.checkpoint_every_epochs = 2.0
  config.model.video = encoders.encoder_config('small', widths=(16, 32, 64))
  config.data.update(dict(num_frames=8, multi_crop=((2, 8), (4, 4)), min_resize=56, max_resize=64,
                          crop_size=48, eval_resize=56, eval_clips=4, eval_crops=1,
                          shuffle_buffer=512))
  config.goca.update(dict(num_prototypes=100, projection_hidden=512, separation_steps=5000))
  # The release's rule lr = 0.15 √batch (`docs/papers_and_releases.md`), warm-up over 1 of the 6 epochs.
  config.schedule.update(dict(base_lr=0.15 * 32 ** 0.5, warmup_epochs=1.0))
  config.evaluation.update(dict(batch_size=64, num_frames=0))
  config.evaluation.kmeans.runs = 10
  config.evaluation.retrieval.update(dict(clips=4, crops=1, pool='avg'))
  config.evaluation.probe.pool = 'avg'
  config = goca_ucf101.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
