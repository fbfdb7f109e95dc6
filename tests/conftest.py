import os

import pytest
import torch

# Without a GPU the Triton kernels run in the interpreter, which must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def private_export_cache(tmp_path_factory):
    """Zoo models' exports go to (and are found in) a cache of this test session, never the user's
    ~/.cache/radiofm, so what a developer exported earlier cannot change a result."""
    saved = os.environ.get("RADIOFM_CACHE")
    os.environ["RADIOFM_CACHE"] = str(tmp_path_factory.mktemp("export-cache"))
    yield
    if saved is None:
        os.environ.pop("RADIOFM_CACHE", None)
    else:
        os.environ["RADIOFM_CACHE"] = saved
