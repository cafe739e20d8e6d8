"""``python -m jumpnet_stream``: the same as the ``jumpnet-stream`` command."""

import sys

from .cli import main

sys.exit(main())
