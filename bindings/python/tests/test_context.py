"""Discovery, negotiation, configuration and errors."""

import os
import subprocess
import sys

import pytest

import rm_plugin
from conftest import HERE


def test_discovery_follows_the_plugin_dir_variable():
    path = rm_plugin.find_plugin()
    first = os.environ["REMOTEMEDIA_PLUGIN_DIR"].split(":")[0]
    assert path == os.path.join(first, "rm_plugin.so")
    plugin = rm_plugin.load()
    assert plugin.abi_version == (1, 4)
    assert plugin.version == rm_plugin.__version__


def test_no_plugin_is_a_clear_error():
    # A fresh interpreter: the plugin is loaded once per process.
    code = ("import rm_plugin\n"
            "try:\n    rm_plugin.Context()\n"
            "except rm_plugin.PluginNotFoundError as e:\n    print('missing', e)\n")
    env = dict(os.environ, REMOTEMEDIA_PLUGIN_DIR="/nonexistent",
               PYTHONPATH=os.path.dirname(HERE))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    if os.path.exists("/usr/local/lib/x86_64-linux-gnu/remotemedia/plugins/rm_plugin.so"):
        pytest.skip("an installed plugin is found instead")
    assert result.stdout.startswith("missing"), result.stdout + result.stderr
    assert "REMOTEMEDIA_PLUGIN_DIR" in result.stdout


def test_context_manager_and_info(config):
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        info = ctx.info()
        assert info.negotiated_abi_version == (1 << 16) | 4
        assert ctx.config_get("shm.namespace") == config["shm.namespace"]
        assert "registry.scope" in ctx.config_keys()
    assert ctx.closed
    with pytest.raises(ValueError):
        ctx.info()
    ctx.close()  # idempotent


def test_errors_carry_the_code_name_and_message(config):
    with pytest.raises(rm_plugin.ConfigUnknownKeyError) as caught:
        rm_plugin.Context(dict(config, **{"no.such.key": "1"}), ignore_env=True)
    assert caught.value.name == "CONFIG_UNKNOWN_KEY" and caught.value.code == -7
    assert "no.such.key" in caught.value.message
    with pytest.raises(rm_plugin.ConfigInvalidValueError) as caught:
        rm_plugin.Context(dict(config, **{"registry.scope": "galaxy"}), ignore_env=True)
    assert "galaxy" in str(caught.value)
    assert isinstance(caught.value, rm_plugin.RmError)


def test_invalid_key(ctx):
    with pytest.raises(rm_plugin.InvalidKeyError) as caught:
        ctx.get_or_load("no device", lambda: 1)
    assert caught.value.message
    assert ctx.normalize_key("Whisper@CUDA:007") == "Whisper@cuda:7"
