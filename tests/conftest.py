"""Shared fixtures: a randomly initialised tiny SD pipeline (same classes as the embedded model)."""

import pytest
import torch
from diffusers.utils import logging as diffusers_logging

torch.set_num_threads(2)
# diffusers makes its log handler on first use, on the sys.stderr of that moment: inside a test with
# capsys that stream is closed after the test, and every later diffusers warning prints a logging
# traceback into whatever test runs then (test_reliability's one-line error checks, run alone)
diffusers_logging.get_logger("diffusers")


@pytest.fixture(scope="session")
def random_pipe(tmp_path_factory):
    from pxpo.testbed.embedded import assemble_pipeline, build_text_encoder, build_unet, build_vae
    from pxpo.testbed.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    pipe = assemble_pipeline(build_vae(), build_unet(), build_text_encoder(tok), tok)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def random_pipe_dir(random_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("random_pipe")
    random_pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny batches: one thread is as fast, and on shared cores two were many times slower.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def keep_torch_threads():
    """The studio sets torch's (process-wide) thread count; later test files keep theirs.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("keep_torch_threads")``."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
