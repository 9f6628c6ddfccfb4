"""Shared fixtures: the package from this tree, the plugin from the build,
a unique namespace per test, and a check that /dev/shm is left clean."""

import os
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))
# meson test sets REMOTEMEDIA_PLUGIN_DIR; a hand run of pytest finds the
# default build directory.
if not os.environ.get("REMOTEMEDIA_PLUGIN_DIR") and os.path.exists(
        os.path.join(REPO, "build", "rm_plugin.so")):
    os.environ["REMOTEMEDIA_PLUGIN_DIR"] = os.path.join(REPO, "build")

import rm_plugin  # noqa: E402


def shm_names(namespace):
    """Our /dev/shm objects of one namespace (tensor pools, device tables,
    node tables and model segments)."""
    return sorted(name for name in os.listdir("/dev/shm")
                  if any(name.startswith(prefix + namespace + ".")
                         for prefix in ("rm.", "rmcu.", "rmreg.")))


@pytest.fixture
def namespace():
    """A namespace of its own (shm.namespace and registry.namespace): tests
    never see each other's segments, and nothing may be left behind."""
    name = "py-" + uuid.uuid4().hex[:12]
    yield name
    import gc
    gc.collect()
    left = shm_names(name)
    assert not left, "left in /dev/shm: %s" % left


@pytest.fixture
def config(namespace):
    """Configuration pairs for a context of the test's namespace."""
    return {"shm.namespace": namespace, "registry.namespace": namespace}


@pytest.fixture
def ctx(config):
    with rm_plugin.Context(config, ignore_env=True) as context:
        yield context
