//! Shared by the integration tests: the plugin under test, unique
//! namespaces, and a check that a test left nothing in /dev/shm.
#![allow(dead_code)] // each test file uses part of it

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use rm_plugin::{Context, Plugin};

/// The plugin under test (`$RM_PLUGIN_PATH`, discovery, or the in-tree
/// build), or `None`: a fresh clone without a build skips, unless
/// `$RM_REQUIRE_PLUGIN` is set (meson sets it), when that is a failure.
pub fn plugin() -> Option<Plugin> {
    let plugin = rm_plugin::doctest::plugin();
    if plugin.is_none() {
        eprintln!("skipped: no rm_plugin.so (set RM_PLUGIN_PATH, or build the plugin into build/)");
    }
    plugin
}

/// Returns from the test when there is no plugin to test.
#[macro_export]
macro_rules! plugin_or_skip {
    () => {
        match common::plugin() {
            Some(plugin) => plugin,
            None => return,
        }
    };
}

/// A namespace no other test (or test run) uses: 1 to 32 of [A-Za-z0-9_-].
pub fn namespace(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect();
    format!("rs{tag}-{}-{n}", std::process::id())
}

/// A context in its own shm and registry namespaces, ignoring
/// `$RM_PLUGIN_CONFIG`, with `pairs` on top.
pub fn context(plugin: &Plugin, ns: &str, pairs: &[(&str, &str)]) -> Context {
    try_context(plugin, ns, pairs).expect("context_create")
}

/// As [`context`], the result unwrapped by the caller.
pub fn try_context(
    plugin: &Plugin,
    ns: &str,
    pairs: &[(&str, &str)],
) -> rm_plugin::Result<Context> {
    let mut builder = Context::builder(plugin)
        .ignore_env()
        .set("shm.namespace", ns)
        .set("registry.namespace", ns)
        .set("shm.pool_bytes", "16M")
        .set("shm.max_tensors", "64");
    for (key, value) in pairs {
        builder = builder.set(*key, *value);
    }
    builder.build()
}

/// Names in /dev/shm that belong to namespace `ns` (pools, control
/// segments, device tables, node tables, model segments).
pub fn shm_entries(ns: &str) -> Vec<String> {
    let needle = format!(".{ns}.");
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(&needle))
                .collect()
        })
        .unwrap_or_default()
}

/// Fails the test if namespace `ns` left anything in /dev/shm.
pub fn assert_no_leftovers(ns: &str) {
    let left = shm_entries(ns);
    assert!(left.is_empty(), "namespace {ns} left {left:?} in /dev/shm");
}

/// The test-only fake CUDA driver (`$FAKE_CUDA_LIBRARY`, or the in-tree
/// build's tests/fake_cuda/libcuda.so.1), if there is one.
pub fn fake_cuda() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FAKE_CUDA_LIBRARY") {
        return Some(PathBuf::from(path));
    }
    let in_tree = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../build/tests/fake_cuda/libcuda.so.1"
    ));
    in_tree.is_file().then_some(in_tree)
}
