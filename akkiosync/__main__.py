"""``python -m akkiosync``."""

from akkiosync.cli import main

main()
