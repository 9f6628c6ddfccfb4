//! Safe, idiomatic access to **rm_plugin** from a Rust host: the model
//! registry (process and node scope), shared-memory tensors with
//! descriptors and DLPack, and CUDA device tensors, through the plugin's
//! one versioned vtable, loaded with `dlopen` at run time (no link-time
//! dependency, no crates: only `std`).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let Some(plugin) = rm_plugin::doctest::plugin() else { return Ok(()) };
//! use rm_plugin::{Context, DType, TensorSpec};
//! // let plugin = rm_plugin::Plugin::discover()?;   // $REMOTEMEDIA_PLUGIN_DIR, then the install dir
//! let ctx = Context::with_config(&plugin, &[("shm.namespace", "doc_crate")])?;
//!
//! let model = ctx.get_or_load("whisper-tiny@cpu", |load| {
//!     load.buffer(3)?.copy_from_slice(&[1, 2, 3]);
//!     Ok(())
//! })?;
//! assert_eq!(model.bytes()?, &[1, 2, 3]);
//!
//! let mut tensor = ctx.allocate(&TensorSpec::new(DType::I32, &[4]))?;
//! tensor.as_mut_slice::<i32>()?.copy_from_slice(&[7, 8, 9, 10]);
//! let text = tensor.export_text()?;              // send it to another process
//! let view = ctx.import_text(&text, rm_plugin::Access::ReadOnly)?;
//! assert_eq!(view.as_slice::<i32>()?, &[7, 8, 9, 10]);
//! # Ok(()) }
//! ```
//!
//! - Loading: [`Plugin::discover`], [`Plugin::load`], [`PluginLoader`];
//!   members newer than the negotiated ABI (or than the plugin's vtable)
//!   give [`Error::Unsupported`] instead of being called.
//! - Contexts: [`Context::new`], [`Context::with_config`],
//!   [`Context::from_file`], [`Context::builder`].
//! - Registry: [`Context::get_or_load`] ([`ModelLoad`], [`ModelHandle`]),
//!   [`Context::registry_metrics`], [`Context::models`],
//!   [`Context::evict`], [`Context::reclaim_models`].
//! - Model weights in device memory (ABI 1.4): [`ModelLoad::device_buffer`],
//!   [`ModelHandle::device_pointer`], [`ModelHandle::to_dlpack`] (also
//!   for host models), [`ModelInfo::memory`].
//! - Tensors: [`Context::allocate`] ([`TensorSpec`], [`Tensor`]),
//!   [`Tensor::export`], [`Context::import`], [`Tensor::to_dlpack`],
//!   [`Context::pool_stats`], [`Context::shm_list`],
//!   [`Context::reclaim_tensors`].
//! - CUDA (ABI 1.3): [`Context::cuda_info`], `TensorSpec::device`,
//!   [`Context::wrap_device`], [`Tensor::record`], [`Tensor::wait`].
//! - Host services: [`HostServices`] (a log sink and clock) through
//!   [`PluginLoader::host_services`].
//! - Errors: [`Error`], one variant per plugin code.
//!
//! Threads: [`Plugin`], [`Context`], [`ModelHandle`], [`Tensor`] and the
//! DLPack exports are `Send` and `Sync`, as the header's thread-safety rules
//! allow; handles, tensors and exports borrow their context, so it cannot
//! be destroyed while they live. The plugin's per-thread error message is
//! read right after each failing call, on the same thread.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod context;
mod cuda;
mod error;
mod plugin;
mod registry;
mod services;
pub mod sys;
mod tensor;

pub use context::{Context, ContextBuilder, ContextInfo};
pub use cuda::{CudaDevice, CudaInfo, CudaStream, Wait};
pub use error::{Detail, Error, Result};
pub use plugin::{install_dirs, AbiVersion, Features, Plugin, PluginLoader, PLUGIN_DIR_ENV};
pub use registry::{
    DeviceBuffer, ModelHandle, ModelInfo, ModelLoad, ModelMemory, ModelState, RegistryMetrics,
    RegistryReclaimReport, Scope,
};
pub use services::{HostServices, LogLevel};
pub use tensor::{
    Access, DType, Descriptor, Device, DlPack, DlPackVersioned, Element, Memory, PoolStats,
    ReclaimReport, ShmPoolInfo, Tensor, TensorInfo, TensorSpec,
};

use std::ffi::{c_char, CStr, CString};
use std::path::Path;

/// A C string for the plugin, or `InvalidArgument` naming what held a NUL.
pub(crate) fn c_string(value: &str, what: &str) -> Result<CString> {
    CString::new(value).map_err(|_| Error::invalid(format!("{what} {value:?} holds a NUL byte")))
}

pub(crate) fn c_path(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} holds a NUL byte", path.display())))
}

/// A copy of a NUL-terminated string from the plugin ("" for NULL).
pub(crate) fn cstr_ptr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the plugin's strings are NUL-terminated and valid during this
    // call (static, or until the thread's next call into the plugin).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A fixed char array of a struct, up to its first NUL.
pub(crate) fn cstr_array(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Rows of a listing member (registry_list, shm_list): asks for the count,
/// then reads with room to spare, again while the list grows meanwhile.
pub(crate) fn list_rows<T: sys::AbiStruct>(
    ctx: &Context,
    mut call: impl FnMut(*mut T, u32, *mut u32) -> i32,
) -> Result<Vec<T>> {
    let mut count = 0u32;
    let code = call(std::ptr::null_mut(), 0, &mut count);
    if code != sys::RM_OK && code != -15 {
        return Err(ctx.error(code));
    }
    loop {
        let capacity = count + 8;
        let mut rows: Vec<T> = (0..capacity).map(|_| T::init()).collect();
        let code = call(rows.as_mut_ptr(), capacity, &mut count);
        if code == -15 {
            continue;
        }
        ctx.check(code)?;
        rows.truncate(count as usize);
        return Ok(rows);
    }
}

/// Support for this crate's documentation examples: where the plugin they
/// run against is. Not part of the API.
#[doc(hidden)]
pub mod doctest {
    use std::path::PathBuf;

    /// `$RM_PLUGIN_PATH`, else discovery, else the repository's
    /// `build/rm_plugin.so`; `None` when none exists (the example then does
    /// nothing, unless `$RM_REQUIRE_PLUGIN` is set, when it panics).
    pub fn plugin_path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("RM_PLUGIN_PATH") {
            return Some(PathBuf::from(path));
        }
        if let Ok(plugin) = crate::Plugin::discover() {
            return Some(plugin.path().to_path_buf());
        }
        let in_tree = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../build/rm_plugin.so"
        ));
        if in_tree.is_file() {
            return Some(in_tree);
        }
        assert!(
            std::env::var_os("RM_REQUIRE_PLUGIN").is_none(),
            "RM_REQUIRE_PLUGIN is set but no rm_plugin.so was found"
        );
        None
    }

    /// The plugin at [`plugin_path`], loaded.
    pub fn plugin() -> Option<crate::Plugin> {
        plugin_path()
            .map(|path| crate::Plugin::load(path).expect("loading the plugin for an example"))
    }
}
