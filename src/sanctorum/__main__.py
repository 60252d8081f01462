"""``python -m sanctorum``: the same as the ``sanctorum`` command."""

from sanctorum.cli import main

main()
