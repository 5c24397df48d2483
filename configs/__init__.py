"""The experiments' configs: `<method>_<dataset>.py` files with `get_config(arg)`, and `common.py`.

A package so that a config imports its helpers and the recipe it varies by name (`from configs import
common, selavi_vggsound`); `avssl.main` and `avssl.config_lib.load` put this folder's parent on
`sys.path`, so that works from any working directory.
"""
