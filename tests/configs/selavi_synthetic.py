"""`selavi_vggsound:tiny` on the in-memory synthetic source, for tests that launch `avssl.main` in
several processes: its global batches are the same whatever the number of processes (records are
read per host: each process its own shards), so two processes must reach one process's state."""

import ml_collections

from avssl.data import synthetic
from configs import selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = selavi_vggsound.get_config('tiny')
  # SeLaVi names the splits it evaluates (records' keys); the synthetic source has these two.
  config.data = synthetic.default_config(num_train=64, num_eval=16, train_split='train',
                                         eval_split='eval')
  config.total_steps = 10  # Label updates before steps 0 and 3.
  # The modality alignment (Eq. 7) of the random initialisation compares near-uniform softmaxes: its
  # L1 costs tie to ~1e-7, so the permutation follows the collectives' summation order (gloo across
  # processes vs. in-process). Everything else is compared.
  config.selavi.alignment = False
  return config
