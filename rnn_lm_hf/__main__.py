"""`python -m rnn_lm_hf ...` is the `rnn-lm` command."""

import sys

from .cli import main


sys.exit(main())
