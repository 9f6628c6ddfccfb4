//! CUDA device tensors (ABI 1.3): driver information, wrapping device
//! memory the host already has, and stream ordering.

use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::plugin::member;
use crate::sys::{self, AbiStruct};
use crate::tensor::{Tensor, TensorSpec};

/// A `CUstream` to order device work on. Only a stream's name crosses
/// into the plugin; the driver uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CudaStream(*mut c_void);

// SAFETY: a stream handle is an opaque name the driver accepts from any
// thread; this type never dereferences it.
unsafe impl Send for CudaStream {}
// SAFETY: as for Send.
unsafe impl Sync for CudaStream {}

impl CudaStream {
    /// The legacy default stream (NULL).
    pub const LEGACY_DEFAULT: CudaStream = CudaStream(ptr::null_mut());

    /// A stream the host created.
    ///
    /// # Safety
    /// `stream` is a live `CUstream` of the tensor's device in its primary
    /// context (or NULL) for as long as calls use it: the driver is handed
    /// it as is.
    pub unsafe fn from_raw(stream: *mut c_void) -> CudaStream {
        CudaStream(stream)
    }

    /// The raw `CUstream`.
    pub fn as_raw(self) -> *mut c_void {
        self.0
    }
}

/// What [`Tensor::wait`] waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Makes the stream wait for the producer's recorded work.
    Stream(CudaStream),
    /// Blocks the calling thread until it is done (`RM_TENSOR_WAIT_HOST`).
    Host,
}

/// One device the driver shows this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDevice {
    /// Its local ordinal (`CUDA_VISIBLE_DEVICES` applies).
    pub ordinal: i32,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// `"GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"`.
    pub uuid_text: String,
}

/// What [`Context::cuda_info`] found (`rm_cuda_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaInfo {
    /// `None` when the driver is loaded and shows a device; otherwise the
    /// error device tensors get now (usually `DeviceUnavailable`), whose
    /// message says why.
    pub status: Option<Error>,
    /// `cuDriverGetVersion()`, e.g. 12080; 0 without a driver.
    pub driver_version: i32,
    /// Devices visible (all of them, though at most 16 are listed).
    pub device_count: u32,
    /// The library loaded or tried (`cuda.driver`).
    pub library: String,
    /// One line about the driver and devices, or why none is usable.
    pub message: String,
    /// The devices listed.
    pub devices: Vec<CudaDevice>,
}

impl CudaInfo {
    /// Whether device tensors can be used now.
    pub fn is_usable(&self) -> bool {
        self.status.is_none()
    }
}

impl fmt::Display for CudaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

type ReleasedCallback = Box<dyn FnOnce(*mut c_void) + Send + 'static>;

unsafe extern "C" fn released_trampoline(user: *mut c_void, device_pointer: *mut c_void) {
    // SAFETY: user is the Box<ReleasedCallback> wrap_device leaked; the
    // plugin calls this exactly once.
    let callback = unsafe { Box::from_raw(user as *mut ReleasedCallback) };
    // A panic must not unwind into the plugin.
    let _ = catch_unwind(AssertUnwindSafe(move || callback(device_pointer)));
}

impl Context {
    /// What the CUDA driver offers this process (loading it if no call did
    /// yet): version and devices, or why device tensors are unavailable.
    /// "cuda-ipc" need not be enabled. ABI 1.3.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let Some(plugin) = rm_plugin::doctest::plugin() else { return Ok(()) };
    /// let ctx = rm_plugin::Context::with_config(&plugin, &[("cuda.driver", "/nonexistent/libcuda.so.1")])?;
    /// let info = ctx.cuda_info()?;
    /// assert!(matches!(info.status, Some(rm_plugin::Error::DeviceUnavailable(_))));
    /// assert!(info.message.contains("/nonexistent/libcuda.so.1"));
    /// # Ok(()) }
    /// ```
    pub fn cuda_info(&self) -> Result<CudaInfo> {
        let f = member!(self.plugin(), cuda_info, 1, 3)?;
        let mut raw: Box<sys::RmCudaInfo> = Box::new(sys::RmCudaInfo::init());
        // SAFETY: a live context and a struct made with RM_STRUCT_INIT.
        let code = unsafe { f(self.as_raw(), &mut *raw) };
        let message = crate::cstr_array(&raw.message);
        // FEATURE_UNAVAILABLE fills the struct too: report it as a status.
        if code != sys::RM_OK && code != -6 {
            return Err(self.error(code));
        }
        let status_code = if code != sys::RM_OK { code } else { raw.status };
        let status = (status_code != sys::RM_OK).then(|| {
            Error::from_code(
                status_code,
                self.plugin().error_name(status_code),
                message.clone(),
            )
        });
        let listed = (raw.device_count as usize).min(sys::RM_CUDA_INFO_MAX_DEVICES);
        Ok(CudaInfo {
            status,
            driver_version: raw.driver_version,
            device_count: raw.device_count,
            library: crate::cstr_array(&raw.library),
            message,
            devices: raw.devices[..listed]
                .iter()
                .map(|d| CudaDevice {
                    ordinal: d.ordinal,
                    uuid: d.uuid,
                    uuid_text: crate::cstr_array(&d.uuid_text),
                })
                .collect(),
        })
    }

    /// Makes a shareable tensor of device memory the host already has (a
    /// `cuMemAlloc` allocation), without a copy. `released`, if given, runs
    /// once when nobody holds the memory any more. ABI 1.3.
    ///
    /// # Safety
    /// `device_pointer` is device memory of the spec's device, from
    /// `cuMemAlloc` (or `cudaMalloc`), and the span the spec describes lies
    /// inside its allocation; the memory stays allocated and unchanged in
    /// meaning until `released` runs (without one, until every importer
    /// has released it).
    pub unsafe fn wrap_device(
        &self,
        spec: &TensorSpec,
        device_pointer: *mut c_void,
        released: Option<ReleasedCallback>,
    ) -> Result<Tensor<'_>> {
        let f = member!(self.plugin(), tensor_wrap_device, 1, 3)?;
        let raw_spec = spec.to_raw()?;
        let user = released.map(|callback| Box::into_raw(Box::new(callback)));
        let mut out = ptr::null_mut();
        // SAFETY: a live context, a spec made with RM_STRUCT_INIT, the
        // caller's promise about the pointer, and a callback whose user box
        // lives until the plugin calls it once.
        let code = unsafe {
            f(
                self.as_raw(),
                &raw_spec,
                device_pointer,
                user.map(|_| released_trampoline as sys::RmDeviceReleasedFn),
                user.map_or(ptr::null_mut(), |u| u as *mut c_void),
                &mut out,
            )
        };
        if code != sys::RM_OK {
            if let Some(user) = user {
                // A failed wrap holds nothing, so its callback never runs.
                // SAFETY: the box leaked above, not handed on.
                drop(unsafe { Box::from_raw(user) });
            }
            return Err(self.error(code));
        }
        let raw =
            NonNull::new(out).ok_or_else(|| Error::invalid("the plugin returned no tensor"))?;
        Ok(Tensor::from_parts(self, raw))
    }
}

impl Tensor<'_> {
    /// Producer side: records the tensor's event on `stream` after the work
    /// that wrote it, before exporting. A host tensor needs none (a no-op).
    /// ABI 1.3.
    pub fn record(&self, stream: CudaStream) -> Result<()> {
        let ctx = self.context();
        let f = member!(ctx.plugin(), tensor_record, 1, 3)?;
        // SAFETY: a live handle of ctx; the stream is NULL or one the caller
        // vouched for in CudaStream::from_raw.
        ctx.check(unsafe { f(ctx.as_raw(), self.as_raw(), stream.as_raw()) })
    }

    /// Consumer side: makes `stream` wait for the producer's recorded work,
    /// or blocks this thread ([`Wait::Host`]). ABI 1.3.
    pub fn wait(&self, on: Wait) -> Result<()> {
        let ctx = self.context();
        let f = member!(ctx.plugin(), tensor_wait, 1, 3)?;
        let (stream, flags) = match on {
            Wait::Stream(stream) => (stream.as_raw(), 0),
            Wait::Host => (ptr::null_mut(), sys::RM_TENSOR_WAIT_HOST),
        };
        // SAFETY: a live handle of ctx; the stream as for record.
        ctx.check(unsafe { f(ctx.as_raw(), self.as_raw(), stream, flags) })
    }
}
