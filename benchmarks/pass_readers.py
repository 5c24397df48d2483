"""Ordered-pass throughput with 1 shard reader against `config.data.pass_readers` (8 by default).

    python benchmarks/pass_readers.py --records runs/demo/records   # the demo's records
    python benchmarks/pass_readers.py                               # 256 avsynth clips made here

Each timed pass includes its start (opening the shards, building the tf.data graph), which weighs more
on a small set: the demo's records (`bash scripts/demo.sh`) give the figures to compare.

Two figures per reader count, over the whole training split as the label passes read it:

- **read**: the records only (index and label parsed, nothing decoded): what the readers do;
- **pass**: the demo config's evaluation views (`configs/selavi_demo.py`: frames decoded, resized and
  cropped, the audio window's spectrogram), as `--mode=label` and XDC's label updates read it.

Both reader counts give the same rows in the same order (`avssl/data/pipeline.py`). Every file is read
once before the timed runs, so all runs find the same page cache; `--repeats` interleaves the reader
counts and reports each one's fastest run. On a local disk whose files sit in the page cache reading
is not what bounds a pass (decoding is), so the ratio here is the floor: parallel readers are for
storage with latency (a bucket, a network file system), where one reader waits on each request.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import tensorflow as tf

import machine
from avssl import config_lib
from avssl.data import pipeline
from avssl.data_prep import annotations, make_records, make_synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--records', default=None, help='a records folder (default: avsynth made here)')
_ARGS.add_argument('--videos', type=int, default=256, help='avsynth clips to make without --records')
_ARGS.add_argument('--readers', type=int, default=pipeline.PASS_READERS, help='the parallel count')
_ARGS.add_argument('--batch', type=int, default=64, help="clips per batch (the demo's)")
_ARGS.add_argument('--repeats', type=int, default=2, help='timed runs per reader count, interleaved')


def make_records_here(directory: pathlib.Path, videos: int) -> str:
  """`videos` avsynth clips as the demo makes them (64² short side), in shards of 16."""
  make_synthetic.main([f'--output_dir={directory / "videos"}', f'--num_videos={videos}',
                       '--num_classes=10', '--workers=2'])
  settings = make_records.Settings(fps=10.0, short_side=64, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=16)
  make_records.run(annotations.parse('folder', root=str(directory / 'videos')),
                   str(directory / 'records'), settings, dataset='folder', workers=2)
  return str(directory / 'records')


def clips_per_sec(records: str, readers: int, decode: bool, batch: int) -> float:
  """One ordered pass over the training split in batches of `batch` with `readers` shard readers, in
  clips/s."""
  config = config_lib.load(f'{REPO / "configs" / "selavi_demo.py"}:records={records}')
  data = config.data
  data.pass_readers = readers
  if not decode:
    data.with_video = data.with_audio = False
  source = pipeline.RecordSource(data, batch_size=batch, process_index=0, process_count=1, seed=0)
  start = time.perf_counter()
  clips = sum(int(batch['mask'].sum()) for batch in source.dataset_batches())
  assert clips == source.num_train
  return clips / (time.perf_counter() - start)


def main() -> None:
  args = _ARGS.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    records = args.records or make_records_here(pathlib.Path(tmp), args.videos)
    manifest = pipeline.read_manifest(records)['splits']['train']
    size = sum((pathlib.Path(records) / s['file']).stat().st_size for s in manifest['shards'])
    for path in pathlib.Path(records).glob('*.tfrecord'):
      path.read_bytes()  # The same page cache for every timed run.
    best = {}
    for _ in range(args.repeats):
      for decode in (False, True):
        for readers in (1, args.readers):
          rate = clips_per_sec(records, readers, decode, min(args.batch, manifest['count']))
          best[decode, readers] = max(best.get((decode, readers), 0.0), rate)
  print(f'machine: {machine.cpu()}; tensorflow {tf.__version__}')
  print(f'records: {records}, training split {manifest["count"]} clips in '
        f'{len(manifest["shards"])} shards, {size / 2**20:.0f} MiB, in the page cache')
  mib = size / manifest['count'] / 2**20
  for decode, what in ((False, 'read (records only)'), (True, 'pass (demo eval views)')):
    one, many = best[decode, 1], best[decode, args.readers]
    print(f'{what:24s} 1 reader {one:8.1f} clips/s ({one * mib:6.1f} MiB/s); {args.readers} readers '
          f'{many:8.1f} clips/s ({many * mib:6.1f} MiB/s); x{many / one:.2f}')


if __name__ == '__main__':
  main()
