"""The README's example pipeline runs (small model, few frames)."""

import os
import subprocess
import sys

from conftest import HERE


def test_three_process_pipeline_example():
    script = os.path.join(os.path.dirname(HERE), "examples", "pipeline.py")
    result = subprocess.run([sys.executable, script, "--model-mib", "8", "--frames", "5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "node scope (get_or_load)" in result.stdout
    assert "private copy per process" in result.stdout
