"""What the malformed-input tests of segmentation data share: the one error line, the warnings."""
from __future__ import annotations


def error_line(rc: int, err: str, *names: object) -> str:
    """The one error line of a failed run (exit code 2, no traceback); it names each of ``names``."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: " in line]
