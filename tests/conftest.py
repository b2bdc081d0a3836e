"""Shared pytest fixtures.

A real S3 server for the data-plane tests: one SeaweedFS `weed mini` per test session on
127.0.0.1 (free ports, temporary folder, static credentials), stopped at the end.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """The session's SeaweedFS server (`distdiff.testing.seaweed.SeaweedServer`), started and ready."""
    from distdiff.testing.seaweed import SeaweedServer, find_weed

    try:
        find_weed()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """Point the standard AWS chain of this process (and its children) at the session server."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return seaweed


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh, empty bucket on the session server (with the AWS environment set)."""
    return s3_env.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with `count` intra-op torch threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small tensors: on a shared 2-core machine intra-op threads only
    add overhead, and oversubscribed OpenMP threads can be ten times slower. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def quick_classifier_stem(tmp_path_factory):
    """The path stem of an MNIST classifier trained for seconds (3 epochs on 2,000 digits, > 90 % held out).

    Pipelines and studies in the tests score with it instead of training the full one (about a minute).
    """

    from distdiff.data.embedded import load_embedded_mnist
    from distdiff.eval.classifier import save_classifier, split_train_test, train_mnist_classifier

    images, labels = load_embedded_mnist()
    train, _ = split_train_test(len(images), 1000, seed=0)
    with torch_threads(1):
        model = train_mnist_classifier(images[train[:2000]], labels[train[:2000]], epochs=3, width=8, seed=0,
                                       log=None)
    stem = tmp_path_factory.mktemp("classifier") / "quick"
    save_classifier(model, stem)
    return stem
