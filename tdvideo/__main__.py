"""``python -m tdvideo``."""

from .cli import main

main()
