"""Training scripts in the shape of transformers' examples (run_clm, run_ner, run_glue).

Run them as files (`python training/train_clm.py args.json`) or, installed, as `rnn_lm_hf.training.*`
(the package maps this folder there, so `rnn-lm train` works without a checkout).
"""
