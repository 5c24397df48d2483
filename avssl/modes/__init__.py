"""The run modes of `avssl.main`, one module each: `train` (the shared loop, `avssl/loop.py`),
`evaluate` (the evaluation suite), `label` (labels.csv, the cluster browser and plots), `finetune`
(the fold driver), and `compare` (several runs' results in one table, its own command)."""
