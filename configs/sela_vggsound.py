"""SeLa on VGG-Sound frames (SeLaVi Table 3 a): "naively applying the publicly available source-code
for SeLa on video frames" (SeLaVi §4.1), the baseline SeLaVi improves on.

    python -m avssl.main --config=configs/sela_vggsound.py:table3 --workdir=runs/sela_vggsound \
        --config.data.dir=~/records/vggsound

SeLa (Asano et al., ICLR 2020) as its release (`yukimasano/self-label`, its `main.py` and ImageNet
scripts) runs it, on the video network alone: λ = 25, uniform cluster marginals, 10 linear heads all
labelled from one pass, 100 label updates spaced by a power of 2, SGD at lr 0.05 with batch 256, its
`--augs 3` colour augmentations, 400 epochs. Where SeLa's settings cannot hold on video, SeLaVi's
statement of the row decides: K = 309, the number of classes, as every row of SeLaVi's tables (§4
"Evaluation"; SeLa's 3000 is ImageNet over-clustering), and the video network and clip of the other
rows (R(2+1)D-18 on 30-frame 112² clips: SeLaVi names no other network, and its ft.-Acc column
finetunes the same one). SeLa's RandomResizedCrop has no video counterpart here: the clips keep
SeLaVi's short-side jitter and random crop. The label passes run the network in eval mode after a
BatchNorm warm-up, as SeLaVi's (SeLa's run it in train mode, on batch statistics).
`:table3` is Table 3's 100 epochs; `:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib, optim
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, table3=False)
  config = selavi_vggsound.get_config()
  sela(config)
  config.batch_size = 256  # SeLa's scripts: `bs=256`.
  config.total_epochs = 400.0  # SeLa's scripts: `nepochs=400`.
  config.seed = 42  # SeLa's `main.py`: `setup_runtime(seed=42)`.
  config.selavi.num_heads = 10  # SeLa's scripts: `hc=10`.
  config.selavi.num_label_updates = 100  # SeLa's scripts: `nopts=100`.
  config.optimizer = optim.default_optimizer_config(
      name='sgd', momentum=0.9, weight_decay=1e-5)  # SeLa's `main.py`: momentum 0.9, `--wd -5`.
  config.schedule = optim.default_schedule_config(
      name='step', base_lr=0.05,  # SeLa's `--lr 0.05`, no warm-up, ...
      decay_epochs=(150.0, 300.0, 350.0), decay_rate=0.1)  # ... × 0.1 every `--lrdrop 150` epochs
  # and at 350 (its `lr_schedule`: 0.05 · 0.1³ from epoch 350).
  if arg.table3:
    selavi_vggsound.table3(config)
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config


def sela(config: ml_collections.ConfigDict) -> None:
  """SeLa's method in place of SeLaVi's, on the frames alone, keeping the run's sizes (K, heads,
  number of label updates, batch, schedule): what both the VGG-Sound row and the demo's `:sela` use."""
  s = config.selavi
  s.modalities = ('video',)  # Frames only: no audio network, nothing to align (Table 3 a: MA –).
  s.alignment = False
  s.lam = 25.0  # SeLa's `--lamb 25` (SeLa §3: P^λ).
  s.prior = 'uniform'  # SeLa's equipartition, r = 1/K (SeLa Eq. 3; Table 3 a: G –).
  s.num_groups = 1  # SeLa labels every head from one pass (`cpu_sk`/`gpu_sk`; Table 3 a: DH –).
  s.schedule_power = 2.0  # SeLa's `(epochs + 1.01) · N · linspace(0, 1, nopts)**2`.
  s.head_hidden, s.head_dropout = 0, 0.0  # SeLa's `top_layer`: a linear layer per head.
  # SeLa's `--augs 3`: grayscale p = 0.2, ColorJitter(0.4, 0.4, 0.4, 0.4) always, flip. (It
  # normalises with ImageNet's per-channel statistics; SeLaVi's 0.45 / 0.225 on every channel, their
  # rounded means, are kept.)
  config.data.update(dict(color_jitter=(0.4, 0.4, 0.4, 0.4), color_jitter_prob=1.0,
                          grayscale_prob=0.2, flip=True))
  # The evaluations that read an audio network read the video one only.
  config.evaluation.kmeans.modalities = ('video',)
  config.evaluation.robustness.views = ('video',)
