"""Writes torchvision r2plus1d_18's random weights, a clip and its features to an .npz.

Run as a separate process by test_convert.py: torchvision's import crashes (triton) in a process that has
already loaded TensorFlow, so the reference is computed where only torch is loaded.

    python tests/torchvision_reference.py OUT.npz
"""

import sys

import numpy as np
import torch
import torchvision


def main(out: str) -> None:
  torch.manual_seed(0)
  model = torchvision.models.video.r2plus1d_18(weights=None)
  model.fc = torch.nn.Identity()
  with torch.no_grad():  # non-trivial BN statistics and affine parameters, so eval mode is tested
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm3d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  state_dict = {f'weights/{k}': v.numpy().copy() for k, v in model.state_dict().items()}
  clip = np.random.default_rng(0).standard_normal((2, 3, 8, 56, 56)).astype(np.float32)
  outputs = {}
  with torch.no_grad():
    for train in (False, True):
      model.train(train)
      outputs[f'features_train={train}'] = model(torch.from_numpy(clip)).numpy()
  np.savez(out, clip=clip, **outputs, **state_dict)


if __name__ == '__main__':
  main(sys.argv[1])
