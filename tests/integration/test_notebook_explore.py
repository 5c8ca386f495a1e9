"""notebooks/explore.ipynb executes headless (nbclient, the venv's ipykernel) and draws its plots."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"


@pytest.mark.timeout(300)
def test_explore_notebook_executes(tmp_path, monkeypatch, leak_check):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    # The kernel must be this venv's python (jupyter_client maps argv "python" to sys.executable;
    # make sure the spec it finds is the one installed in the venv).
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    monkeypatch.setenv("ISOBENCH_RUN", str(ROOT / "results" / "fixtures" / "quick-tcg"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    text = "".join(o.get("text", "") for o in outputs)
    assert "quick-tcg" in text and "fixture profile" in text
