"""``python -m densevit`` (also what ``torchrun -m densevit`` runs)."""
import sys

from densevit.cli import main

sys.exit(main())
