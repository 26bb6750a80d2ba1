"""sttn_sim runs without the interop packages; the ONNX paths then say how to install them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime", "qonnx"):
            raise ImportError(f"blocked {name}")
sys.meta_path.insert(0, Block())
import numpy as np
import sttn_sim
from sttn_sim.errors import CheckpointError
assert not any(m.split(".")[0] in ("onnx", "onnxruntime", "qonnx") for m in sys.modules)
folded = sttn_sim.fold(sttn_sim.synthetic_model("plain_ternary_cnn"))
sttn_sim.Engine(folded).run(np.zeros((1,) + folded.input_shape, np.float32))
for call in (lambda: sttn_sim.load_checkpoint(sys.argv[1]), lambda: sttn_sim.export_onnx(folded, sys.argv[2])):
    try:
        call()
    except CheckpointError as exc:
        print(exc)
"""


def test_without_onnx_installed(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "brevitas_ternary_cnn.onnx"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(fixture), str(tmp_path / "x.onnx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("needs the 'onnx' package" in l and "pip install 'sttn_sim[interop]'" in l for l in lines)
    assert not (tmp_path / "x.onnx").exists()
