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

/// The CUDA driver API of the test-only fake library, through `dlsym`: for
/// tests only, to make and read device memory without a GPU. (The fake's
/// device memory happens to be host memory; these tests never rely on it.)
pub mod driver {
    use std::ffi::{c_char, c_int, c_void, CString};
    use std::path::Path;

    #[link(name = "dl")]
    extern "C" {
        fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }

    type Status = c_int;

    /// The driver, initialised, with device 0's primary context current on
    /// the thread that opened it (use it from that thread).
    pub struct Driver {
        handle: *mut c_void,
        context: *mut c_void,
    }

    macro_rules! call {
        ($driver:expr, $name:literal, fn($($t:ty),*), $($arg:expr),*) => {{
            let f: unsafe extern "C" fn($($t),*) -> Status = $driver.symbol($name);
            // SAFETY: the symbol has this C signature in the driver API, and
            // the arguments are what it expects (checked by each caller).
            let status = unsafe { f($($arg),*) };
            assert_eq!(status, 0, "{} failed: CUresult {status}", $name);
        }};
    }

    impl Driver {
        /// Opens `library` (the plugin's `cuda.driver`, so both share it)
        /// and makes device 0's primary context current.
        pub fn open(library: &Path) -> Driver {
            let path = CString::new(library.to_string_lossy().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated path; the handle is never closed.
            let handle = unsafe { dlopen(path.as_ptr(), 2) };
            assert!(!handle.is_null(), "dlopen {}", library.display());
            let mut driver = Driver {
                handle,
                context: std::ptr::null_mut(),
            };
            call!(driver, "cuInit", fn(u32), 0);
            let mut device: c_int = -1;
            call!(driver, "cuDeviceGet", fn(*mut c_int, c_int), &mut device, 0);
            let mut context = std::ptr::null_mut();
            call!(
                driver,
                "cuDevicePrimaryCtxRetain",
                fn(*mut *mut c_void, c_int),
                &mut context,
                device
            );
            call!(driver, "cuCtxPushCurrent_v2", fn(*mut c_void), context);
            driver.context = context;
            driver
        }

        fn symbol<F: Copy>(&self, name: &str) -> F {
            let c_name = CString::new(name).unwrap();
            // SAFETY: a live handle and a NUL-terminated name.
            let symbol = unsafe { dlsym(self.handle, c_name.as_ptr()) };
            assert!(!symbol.is_null(), "no {name} in the driver");
            assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
            // SAFETY: F is the function pointer type the caller names for
            // this symbol, of pointer size (checked).
            unsafe { std::mem::transmute_copy(&symbol) }
        }

        /// `cuMemAlloc_v2`.
        pub fn alloc(&self, bytes: usize) -> *mut c_void {
            let mut pointer: u64 = 0;
            call!(
                self,
                "cuMemAlloc_v2",
                fn(*mut u64, usize),
                &mut pointer,
                bytes
            );
            pointer as usize as *mut c_void
        }

        /// `cuMemFree_v2`.
        pub fn free(&self, pointer: *mut c_void) {
            call!(self, "cuMemFree_v2", fn(u64), pointer as usize as u64);
        }

        /// `cuMemcpyHtoD_v2`.
        pub fn upload(&self, device: *mut c_void, bytes: &[u8]) {
            call!(
                self,
                "cuMemcpyHtoD_v2",
                fn(u64, *const c_void, usize),
                device as usize as u64,
                bytes.as_ptr() as *const c_void,
                bytes.len()
            );
        }

        /// `cuMemcpyDtoH_v2`.
        pub fn download(&self, device: *mut c_void, len: usize) -> Vec<u8> {
            let mut out = vec![0u8; len];
            call!(
                self,
                "cuMemcpyDtoH_v2",
                fn(*mut c_void, u64, usize),
                out.as_mut_ptr() as *mut c_void,
                device as usize as u64,
                len
            );
            out
        }

        /// `cuStreamCreate` (default flags).
        pub fn stream(&self) -> *mut c_void {
            let mut stream = std::ptr::null_mut();
            call!(
                self,
                "cuStreamCreate",
                fn(*mut *mut c_void, u32),
                &mut stream,
                0
            );
            stream
        }

        /// `cuStreamDestroy_v2`.
        pub fn destroy_stream(&self, stream: *mut c_void) {
            call!(self, "cuStreamDestroy_v2", fn(*mut c_void), stream);
        }
    }

    impl Drop for Driver {
        fn drop(&mut self) {
            let mut popped = std::ptr::null_mut();
            call!(
                self,
                "cuCtxPopCurrent_v2",
                fn(*mut *mut c_void),
                &mut popped
            );
            call!(self, "cuDevicePrimaryCtxRelease_v2", fn(c_int), 0);
        }
    }
}
