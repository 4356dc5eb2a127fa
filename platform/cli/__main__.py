"""``python -m tomoloop.cli``: the ``tomoloop`` command."""

from tomoloop.cli import main

main()
