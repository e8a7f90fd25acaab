"""The README's code blocks run and print what the README says they print."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_losses_example_prints_the_classic_value() -> None:
    block = next(b for b in python_blocks() if "ClipLoss" in b)
    expected = re.search(r"# (\d+\.\d+)", block)
    assert expected is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    assert out.getvalue().strip() == expected.group(1)
    # The value is the mean of the two directions, -log(e / (e + 1)), not their sum (0.63).
    assert math.isclose(float(out.getvalue()), -math.log(math.e / (math.e + 1)), abs_tol=5e-4)
