//! The model registry: `get_or_load` with a closure, handles that release
//! themselves, metrics, listing, eviction and reclaim; model weights in
//! device memory and DLPack views of a model (1.4).

use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use crate::context::Context;
use crate::cuda::CudaStream;
use crate::error::{Error, Result};
use crate::plugin::member;
use crate::sys::{self, AbiStruct};
use crate::tensor::{Device, DlPackVersioned};

/// What a loader closure is given: the key, and the three ways to hand the
/// plugin a model.
///
/// - [`ModelLoad::buffer`]: the plugin's buffer (ABI 1.2 loader buffers),
///   which works in both scopes and is required in node scope. The plugin
///   seals it read-only when the loader returns.
/// - [`ModelLoad::device_buffer`]: the plugin's device buffer on the key's
///   GPU (ABI 1.4, keys `"name@cuda:N"`, both scopes), which the loader
///   fills with CUDA copies or kernels; in node scope one copy per GPU
///   serves every process.
/// - [`ModelLoad::provide`]: bytes the host made (the 1.0 way, process
///   scope only; in node scope the load fails with `NotShareable`).
pub struct ModelLoad<'a> {
    raw: *mut sys::RmLoadedModel,
    ctx: &'a Context,
    key: &'a str,
    // What this load handed the plugin that the crate must free if the
    // closure fails afterwards (a provided or fallback Vec).
    owned: Option<*mut Vec<u8>>,
    used: bool,
    len: Option<usize>,
    device: bool,
}

/// A device buffer from [`ModelLoad::device_buffer`] (ABI 1.4): where the
/// loader writes the model on the key's GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceBuffer {
    /// The buffer's address (a `CUdeviceptr`), valid in every CUDA context
    /// of the process; writable until the loader returns, zero-filled.
    pub device_pointer: u64,
    /// Its size in bytes (the model's size).
    pub bytes: usize,
    /// A stream of device N's primary context that the plugin made for
    /// this load; the loader may queue its copies on it (or on any stream
    /// of that context). The plugin waits for the device's work and
    /// destroys the stream after the loader returns.
    pub stream: CudaStream,
}

impl fmt::Debug for ModelLoad<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelLoad")
            .field("key", &self.key)
            .field("len", &self.len)
            .finish()
    }
}

unsafe extern "C" fn destroy_vec(_model: *mut c_void, destroy_user: *mut c_void) {
    // SAFETY: destroy_user is the Box<Vec<u8>> that ModelLoad leaked for
    // this model; the plugin calls destroy exactly once.
    drop(unsafe { Box::from_raw(destroy_user as *mut Vec<u8>) });
}

impl<'a> ModelLoad<'a> {
    /// The normalised key being loaded.
    pub fn key(&self) -> &str {
        self.key
    }

    /// A zero-filled buffer of `bytes` bytes to write the model into (at
    /// most once per load). With a plugin older than 1.2, which has no
    /// loader buffers, it is memory of the crate's handed over as in 1.0
    /// (process scope, the only scope such a plugin has).
    pub fn buffer(&mut self, bytes: usize) -> Result<&mut [u8]> {
        if self.used {
            return Err(Error::invalid(format!(
                "{}: the loader asked for a second model buffer",
                self.key
            )));
        }
        // SAFETY: raw is the plugin's struct, valid while the loader runs,
        // which is the lifetime of this ModelLoad; alloc_buffer is read only
        // if its struct_size covers it (a 1.0 or 1.1 plugin's is shorter).
        let alloc = unsafe {
            sys::RmLoadedModel::has_buffer(self.raw)
                .then(|| ptr::addr_of!((*self.raw).alloc_buffer).read())
                .flatten()
        };
        let Some(alloc) = alloc else {
            self.provide(vec![0u8; bytes])?;
            let owned = self.owned.expect("just provided");
            // SAFETY: the Vec lives in its Box until the plugin destroys the
            // model or this load frees it; the slice borrows self mutably, so
            // nothing else touches it meanwhile.
            return Ok(unsafe { (*owned).as_mut_slice() });
        };
        let mut buffer = ptr::null_mut();
        // SAFETY: the plugin's own struct and function, called once, while
        // the loader runs.
        let code = unsafe { alloc(self.raw, bytes as u64, &mut buffer) };
        if code != sys::RM_OK || buffer.is_null() {
            return Err(self.alloc_error(code, format!("alloc_buffer({bytes})")));
        }
        self.used = true;
        self.len = Some(bytes);
        // SAFETY: the plugin gave `bytes` writable, zero-filled bytes that
        // the loader may write until it returns; the slice's borrow of self
        // ends before the closure (and so the loader) returns.
        Ok(unsafe { std::slice::from_raw_parts_mut(buffer as *mut u8, bytes) })
    }

    /// A zero-filled device buffer of `bytes` bytes on the key's GPU, for
    /// a key `"name@cuda:N"` (at most one buffer, host or device, per load;
    /// ABI 1.4). The loader fills it (`cuMemcpyHtoD`, its own kernels) in
    /// device N's primary context, on [`DeviceBuffer::stream`] or any
    /// stream of that context, before it returns; the plugin then waits
    /// for the device's work, seals the buffer read-only (node scope) and
    /// hands [`DeviceBuffer::device_pointer`] to every caller as the model.
    ///
    /// Errors: `Unsupported` from a plugin older than 1.4 (its loader
    /// struct has no device buffers); the plugin's codes otherwise:
    /// `InvalidArgument` (a key whose device is not `cuda:N`, a second
    /// buffer, 0 bytes), `FeatureUnavailable`/`FeatureDisabled`
    /// (`cuda-ipc`), `DeviceUnavailable` (no driver or device, or, in node
    /// scope, no exportable memory), `NoMemory`, `System`.
    pub fn device_buffer(&mut self, bytes: usize) -> Result<DeviceBuffer> {
        if self.used {
            return Err(Error::invalid(format!(
                "{}: the loader asked for a second model buffer",
                self.key
            )));
        }
        // SAFETY: as in buffer(), for alloc_device_buffer (1.4).
        let alloc = unsafe {
            sys::RmLoadedModel::has_device_buffer(self.raw)
                .then(|| ptr::addr_of!((*self.raw).alloc_device_buffer).read())
                .flatten()
        };
        let negotiated = self.ctx.plugin().abi_version();
        let Some(alloc) = alloc.filter(|_| negotiated >= crate::AbiVersion::V1_4) else {
            // SAFETY: struct_size and abi_version are 1.0 fields.
            let (size, version) = unsafe { ((*self.raw).struct_size, (*self.raw).abi_version) };
            return Err(Error::Unsupported {
                member: "alloc_device_buffer",
                since: "1.4",
                plugin: format!(
                    "{}: ABI {negotiated} negotiated; the plugin's rm_loaded_model is {size} \
                     bytes (ABI {})",
                    self.key,
                    crate::AbiVersion::from_raw(version)
                ),
            });
        };
        let mut device_pointer = 0u64;
        let mut stream = ptr::null_mut();
        // SAFETY: the plugin's own struct and function, called once, while
        // the loader runs, with two valid outputs.
        let code = unsafe { alloc(self.raw, bytes as u64, &mut device_pointer, &mut stream) };
        if code != sys::RM_OK || device_pointer == 0 {
            return Err(self.alloc_error(code, format!("alloc_device_buffer({bytes})")));
        }
        self.used = true;
        self.len = Some(bytes);
        self.device = true;
        Ok(DeviceBuffer {
            device_pointer,
            bytes,
            // SAFETY: the plugin's stream for this load, live until the
            // loader returns (the plugin destroys it afterwards).
            stream: unsafe { CudaStream::from_raw(stream) },
        })
    }

    /// The error of a failed buffer request, with the plugin's message (read
    /// on this thread, right after the call).
    fn alloc_error(&self, code: i32, call: String) -> Error {
        let code = if code == sys::RM_OK { -4 } else { code };
        let plugin_message = self.ctx.error(code).message();
        let mut message = format!("{}: {call} failed", self.key);
        if !plugin_message.is_empty() {
            message = format!("{message}: {plugin_message}");
        }
        Error::from_code(code, self.ctx.plugin().error_name(code), message)
    }

    /// Hands the plugin a model the host made (the 1.0 way): process scope
    /// only. The plugin keeps it until eviction and then drops it.
    pub fn provide(&mut self, model: Vec<u8>) -> Result<()> {
        if self.used {
            return Err(Error::invalid(format!(
                "{}: the loader gave a second model",
                self.key
            )));
        }
        let len = model.len();
        let boxed = Box::into_raw(Box::new(model));
        // SAFETY: raw is valid while the loader runs; the 1.0 fields are
        // always there. boxed stays alive until destroy_vec or, if the load
        // fails, the trampoline frees it.
        unsafe {
            let raw = &mut *self.raw;
            raw.model = (*boxed).as_mut_ptr() as *mut c_void;
            raw.bytes = len as u64;
            raw.destroy = Some(destroy_vec);
            raw.destroy_user = boxed as *mut c_void;
        }
        self.owned = Some(boxed);
        self.used = true;
        self.len = Some(len);
        Ok(())
    }
}

struct LoaderState<F> {
    loader: Option<F>,
    ctx: *const Context,
    error: Option<Error>,
    len: Option<usize>,
    device: bool,
}

unsafe extern "C" fn loader_trampoline<F>(
    user: *mut c_void,
    key: *const c_char,
    out: *mut sys::RmLoadedModel,
) -> i32
where
    F: FnOnce(&mut ModelLoad<'_>) -> Result<()>,
{
    // A panic must not unwind into C: it becomes LOADER_FAILED.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: user is the LoaderState that get_or_load passed, alive for
        // the whole call; key is NUL-terminated during the call.
        let state = unsafe { &mut *(user as *mut LoaderState<F>) };
        // SAFETY: the plugin passes the key NUL-terminated, valid during the call.
        let key = unsafe { CStr::from_ptr(key) }
            .to_string_lossy()
            .into_owned();
        let Some(loader) = state.loader.take() else {
            return -13;
        };
        // SAFETY: the context that called model_get_or_load, borrowed for
        // the whole call.
        let ctx = unsafe { &*state.ctx };
        let mut load = ModelLoad {
            raw: out,
            ctx,
            key: &key,
            owned: None,
            used: false,
            len: None,
            device: false,
        };
        let result = loader(&mut load);
        state.len = load.len;
        state.device = load.device;
        match result {
            Ok(()) => sys::RM_OK,
            Err(error) => {
                if let Some(owned) = load.owned.take() {
                    // The plugin does not destroy a failed load's model: free
                    // it here and take it back from the struct.
                    // SAFETY: out is valid during the call; owned is the Box
                    // that provide() leaked and nothing else freed.
                    unsafe {
                        (*out).model = ptr::null_mut();
                        (*out).destroy = None;
                        (*out).destroy_user = ptr::null_mut();
                        drop(Box::from_raw(owned));
                    }
                }
                let code = match error.code() {
                    Some(code) if code < 0 => code,
                    _ => -13,
                };
                state.error = Some(error);
                code
            }
        }
    }));
    outcome.unwrap_or(-13)
}

/// One reference to a loaded model (`rm_model_handle`), released on `Drop`.
///
/// The model is the bytes its loader wrote: [`ModelHandle::bytes`] on the
/// host, [`ModelHandle::device_pointer`] for weights in device memory (1.4),
/// and [`ModelHandle::to_dlpack`] for either (1.4). `Send` and `Sync`: a
/// handle may be released on any thread, and the bytes are read-only
/// (sealed loader buffers, or a provided `Vec` nobody writes).
pub struct ModelHandle<'ctx> {
    ctx: &'ctx Context,
    raw: NonNull<sys::RmModelHandle>,
    model: *const u8,
    key: String,
    layout: OnceLock<Layout>,
}

/// A model's size and whether it is in device memory.
#[derive(Clone, Copy, Debug)]
struct Layout {
    len: usize,
    device: bool,
}

// SAFETY: model_release may run on any thread (header), and the model's
// bytes are immutable while a handle is held.
unsafe impl Send for ModelHandle<'_> {}
// SAFETY: shared access only reads the immutable model.
unsafe impl Sync for ModelHandle<'_> {}

impl fmt::Debug for ModelHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelHandle")
            .field("key", &self.key)
            .field("model", &self.model)
            .finish()
    }
}

impl<'ctx> ModelHandle<'ctx> {
    /// The normalised key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The model's first byte: in node scope the start of this process's
    /// read-only mapping, the same physical pages in every process. For
    /// weights in device memory (1.4) a device address: use
    /// [`ModelHandle::device_pointer`].
    pub fn as_ptr(&self) -> *const u8 {
        self.model
    }

    /// The model's size and place: from the loader that ran in this call,
    /// else from the registry's row for the key, else (a node-scope device
    /// model, whose row names the GPU by UUID) from a DLPack view; found
    /// once per handle.
    fn layout(&self) -> Result<Layout> {
        if let Some(layout) = self.layout.get() {
            return Ok(*layout);
        }
        let row = self
            .ctx
            .models()?
            .into_iter()
            .find(|row| row.key == self.key);
        let layout = match row {
            Some(row) => Layout {
                len: row.bytes as usize,
                device: row.memory == ModelMemory::Cuda,
            },
            None => match self.to_dlpack() {
                Ok(view) => Layout {
                    len: view.shape().first().copied().unwrap_or(0).max(0) as usize,
                    device: matches!(view.device(), Device::Cuda(_)),
                },
                Err(_) => {
                    return Err(Error::from_code(
                        -11,
                        "NOT_FOUND",
                        format!("{}: no registry row", self.key),
                    ))
                }
            },
        };
        Ok(*self.layout.get_or_init(|| layout))
    }

    /// The model's size in bytes (`rm_model_info.bytes`).
    pub fn len(&self) -> Result<usize> {
        Ok(self.layout()?.len)
    }

    /// Whether the model has no bytes.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The weights' device address (a `CUdeviceptr`, valid in every CUDA
    /// context of this process while the handle lives) for a model loaded
    /// into a device buffer ([`ModelLoad::device_buffer`], ABI 1.4); `None`
    /// for a model in host memory.
    pub fn device_pointer(&self) -> Result<Option<u64>> {
        Ok(self.layout()?.device.then_some(self.model as u64))
    }

    /// The model's bytes, for a model in host memory. Their length comes
    /// from the loader that ran in this call or else from the registry's
    /// row for the key (read once per handle). A model in device memory is
    /// `InvalidArgument`: see [`ModelHandle::device_pointer`] and
    /// [`ModelHandle::to_dlpack`].
    pub fn bytes(&self) -> Result<&[u8]> {
        let Layout { len, device } = self.layout()?;
        if device {
            return Err(Error::invalid(format!(
                "{}: the model is in device memory, not host bytes (device_pointer, to_dlpack)",
                self.key
            )));
        }
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: a held handle keeps the model mapped and unchanged (sealed
        // read-only, or a Vec nobody writes) for the handle's lifetime, and
        // the registry counts `len` bytes for it.
        Ok(unsafe { std::slice::from_raw_parts(self.model, len) })
    }

    /// The model as a DLPack 1.0 tensor (`model_to_dlpack`, ABI 1.4): 1-D
    /// uint8 of the model's bytes, on [`Device::Cpu`] or, for weights in
    /// device memory, [`Device::Cuda`] (this process's ordinal), flagged
    /// read-only. The view holds a reference of its own: the model stays
    /// loaded until it is dropped (or its consumer calls the deleter, after
    /// [`DlPackVersioned::into_raw`]), even after this handle is.
    ///
    /// Errors: `Unsupported` from a plugin older than 1.4; `NotShareable`
    /// for a model the loader gave as its own memory
    /// ([`ModelLoad::provide`]), whose bytes the plugin does not hold.
    pub fn to_dlpack(&self) -> Result<DlPackVersioned<'ctx>> {
        let f = member!(self.ctx.plugin(), model_to_dlpack, 1, 4)?;
        let mut out = ptr::null_mut();
        // SAFETY: a live handle of this context and an output.
        let code = unsafe { f(self.ctx.as_raw(), self.raw.as_ptr(), &mut out) };
        self.ctx.check(code)?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::invalid("model_to_dlpack returned no DLPack tensor"))?;
        Ok(DlPackVersioned::from_raw(raw, self.ctx))
    }
}

impl Drop for ModelHandle<'_> {
    fn drop(&mut self) {
        if crate::services::in_service() {
            return; // leaked: a host service must not call into the plugin
        }
        let release = self
            .ctx
            .plugin()
            .vtable()
            .model_release
            .expect("checked at load");
        // SAFETY: the handle came from this context and is released once.
        // A failure cannot be reported from Drop; the plugin logs it.
        unsafe { release(self.ctx.as_raw(), self.raw.as_ptr()) };
    }
}

/// Registry scope of a context (`registry.scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Each context has its own models.
    Process,
    /// One table per `registry.namespace` and machine (1.2).
    Node,
}

/// State of a registry row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelState {
    /// Loaded.
    Ready,
    /// Node scope: a loader is running.
    Loading,
}

/// Where a model lives (`rm_model_info.memory`, ABI 1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelMemory {
    /// Private host memory of the process: the loader's own pointer, or a
    /// buffer in process scope (`RM_MODEL_MEMORY_HOST`; also every row of a
    /// plugin older than 1.4).
    Host,
    /// A sealed shared-memory segment, node scope (`RM_MEMORY_SHM`).
    Shm,
    /// A device buffer (`RM_MEMORY_CUDA`).
    Cuda,
}

/// One row of [`Context::models`] (`rm_model_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The normalised key.
    pub key: String,
    /// `"cpu"`, `"cuda:0"`, ...
    pub device: String,
    /// Its size, counted against `registry.max_bytes`.
    pub bytes: u64,
    /// Handles not yet released (node scope: of every process).
    pub refcount: u64,
    /// When it was loaded (monotonic nanoseconds).
    pub loaded_at_ns: u64,
    /// Its last release, or the load.
    pub last_used_ns: u64,
    /// The context's scope (1.2; `Process` from an older plugin).
    pub scope: Scope,
    /// Ready or loading (1.2).
    pub state: ModelState,
    /// Processes holding references (1.2).
    pub holders: u32,
    /// Node scope while loading: the loader's pid (1.2).
    pub loader_pid: i32,
    /// Nanoseconds idle (1.2).
    pub idle_ns: u64,
    /// Where the model lives (1.4; `Host` from an older plugin). A loading
    /// row says what is known so far.
    pub memory: ModelMemory,
    /// `Cuda`: this process's ordinal of the device, -1 when it does not
    /// see the device; otherwise -1 (1.4).
    pub device_ordinal: i32,
    /// `Cuda`: the device's UUID; otherwise zero (1.4).
    pub device_uuid: [u8; 16],
    /// `Cuda`: the bytes allocated on the device (`bytes` rounded up to the
    /// allocation granularity in node scope); otherwise 0 (1.4).
    pub device_bytes: u64,
}

/// Registry counters since the context was created (`rm_registry_metrics`).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryMetrics {
    /// Found ready.
    pub hits: u64,
    /// Not ready: ran a loader or waited for one.
    pub misses: u64,
    /// Loader calls that succeeded.
    pub loads: u64,
    /// Loader calls that failed.
    pub load_failures: u64,
    /// All evictions.
    pub evictions: u64,
    /// Evictions by TTL.
    pub evictions_ttl: u64,
    /// Evictions to fit the budgets.
    pub evictions_lru: u64,
    /// Evictions asked for.
    pub evictions_explicit: u64,
    /// Models loaded now.
    pub models: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Admissions that left the budget exceeded.
    pub over_budget: u64,
    /// hits / (hits + misses).
    pub hit_rate: f64,
    /// Node scope: found ready and mapped without a loader (1.2).
    pub attaches: u64,
    /// Node scope: loads taken over from a dead loader (1.2).
    pub takeovers: u64,
    /// Node scope: references of dead processes dropped (1.2).
    pub dead_references: u64,
    /// Node scope: table lock found held by a dead process (1.2).
    pub lock_recoveries: u64,
}

/// What [`Context::reclaim_models`] did (`rm_registry_reclaim_report`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegistryReclaimReport {
    /// References of dead processes dropped.
    pub dead_references: u64,
    /// Claims of dead loaders cleared.
    pub loads_abandoned: u64,
    /// Idle models evicted.
    pub models_evicted: u64,
    /// Orphan segments (and the table, if removed) unlinked.
    pub segments_unlinked: u64,
    /// /dev/shm bytes freed.
    pub bytes_unlinked: u64,
}

impl Context {
    /// The model for `key`, loading it with `loader` on a miss: at most
    /// once per context (process scope) or per machine (node scope, where
    /// the loader must use [`ModelLoad::buffer`]). Concurrent callers of
    /// one key share one load. The loader runs on this thread, at most
    /// once, before this returns; its error (or a panic, as `LoaderFailed`)
    /// is what this call returns.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let Some(plugin) = rm_plugin::doctest::plugin() else { return Ok(()) };
    /// let ctx = rm_plugin::Context::new(&plugin)?;
    /// let model = ctx.get_or_load("whisper-tiny@cpu", |load| {
    ///     load.buffer(4)?.copy_from_slice(b"RIFF");
    ///     Ok(())
    /// })?;
    /// assert_eq!(model.bytes()?, b"RIFF");
    /// // A second get is a hit: the loader does not run.
    /// let again = ctx.get_or_load("whisper-tiny@CPU", |_| unreachable!())?;
    /// assert_eq!(again.as_ptr(), model.as_ptr());
    /// assert_eq!(ctx.registry_metrics()?.hits, 1);
    /// # Ok(()) }
    /// ```
    pub fn get_or_load<F>(&self, key: &str, loader: F) -> Result<ModelHandle<'_>>
    where
        F: FnOnce(&mut ModelLoad<'_>) -> Result<()>,
    {
        let get = self
            .plugin()
            .vtable()
            .model_get_or_load
            .expect("checked at load");
        let c_key = crate::c_string(key, "model key")?;
        let mut state = LoaderState {
            loader: Some(loader),
            ctx: self,
            error: None,
            len: None,
            device: false,
        };
        let mut handle = ptr::null_mut();
        let mut model = ptr::null_mut();
        // SAFETY: a live context, a NUL-terminated key, a loader whose user
        // pointer (state) outlives the call (the loader runs only during it),
        // and two valid outputs.
        let code = unsafe {
            get(
                self.as_raw(),
                c_key.as_ptr(),
                Some(loader_trampoline::<F>),
                &mut state as *mut LoaderState<F> as *mut c_void,
                &mut handle,
                &mut model,
            )
        };
        if code != sys::RM_OK {
            let error = self.error(code);
            return Err(match state.error {
                // The closure's own error says more than the plugin's echo of its code.
                Some(own) if own.code().unwrap_or(-13) == code || code == -13 => own,
                _ => error,
            });
        }
        let raw = NonNull::new(handle)
            .ok_or_else(|| Error::invalid("model_get_or_load gave no handle"))?;
        // Keys are compared normalised with registry rows (bytes()).
        let normalised = self
            .plugin()
            .normalize_key(key)
            .unwrap_or_else(|_| key.to_string());
        let layout = OnceLock::new();
        if let Some(len) = state.len {
            let _ = layout.set(Layout {
                len,
                device: state.device,
            });
        }
        Ok(ModelHandle {
            ctx: self,
            raw,
            model: model as *const u8,
            key: normalised,
            layout,
        })
    }

    /// Evicts `key` now if no handle holds it (`Busy` otherwise, `NotFound`
    /// if it is not loaded). Node scope: node-wide.
    pub fn evict(&self, key: &str) -> Result<()> {
        let evict = self.plugin().vtable().model_evict.expect("checked at load");
        let c_key = crate::c_string(key, "model key")?;
        // SAFETY: a live context and a NUL-terminated key.
        self.check(unsafe { evict(self.as_raw(), c_key.as_ptr()) })
    }

    /// Evicts every idle model.
    pub fn evict_idle(&self) -> Result<()> {
        let evict = self.plugin().vtable().model_evict.expect("checked at load");
        // SAFETY: a live context; NULL means every idle model.
        self.check(unsafe { evict(self.as_raw(), ptr::null()) })
    }

    /// The registry's counters.
    pub fn registry_metrics(&self) -> Result<RegistryMetrics> {
        let f = self
            .plugin()
            .vtable()
            .registry_metrics
            .expect("checked at load");
        let mut m = sys::RmRegistryMetrics::init();
        // SAFETY: a live context and a struct made with RM_STRUCT_INIT; an
        // older plugin writes only what it knows and leaves the rest zero.
        self.check(unsafe { f(self.as_raw(), &mut m) })?;
        Ok(RegistryMetrics {
            hits: m.hits,
            misses: m.misses,
            loads: m.loads,
            load_failures: m.load_failures,
            evictions: m.evictions,
            evictions_ttl: m.evictions_ttl,
            evictions_lru: m.evictions_lru,
            evictions_explicit: m.evictions_explicit,
            models: m.models,
            bytes: m.bytes,
            over_budget: m.over_budget,
            hit_rate: m.hit_rate,
            attaches: m.attaches,
            takeovers: m.takeovers,
            dead_references: m.dead_references,
            lock_recoveries: m.lock_recoveries,
        })
    }

    /// One row per loaded (node scope: or loading) model, least recently
    /// used first.
    pub fn models(&self) -> Result<Vec<ModelInfo>> {
        let f = self
            .plugin()
            .vtable()
            .registry_list
            .expect("checked at load");
        let rows: Vec<sys::RmModelInfo> = crate::list_rows(self, |out, capacity, count| {
            // SAFETY: `out` holds `capacity` rows of the size passed.
            unsafe {
                f(
                    self.as_raw(),
                    out,
                    std::mem::size_of::<sys::RmModelInfo>() as u32,
                    capacity,
                    count,
                )
            }
        })?;
        // The 1.4 fields exist where the plugin wrote them (struct_size).
        let v1_4 = std::mem::offset_of!(sys::RmModelInfo, device_bytes) + 8;
        Ok(rows
            .iter()
            .map(|r| ModelInfo {
                key: crate::cstr_array(&r.key),
                device: crate::cstr_array(&r.device),
                bytes: r.bytes,
                refcount: r.refcount,
                loaded_at_ns: r.loaded_at_ns,
                last_used_ns: r.last_used_ns,
                scope: if r.scope == 1 {
                    Scope::Node
                } else {
                    Scope::Process
                },
                state: if r.state == 1 {
                    ModelState::Loading
                } else {
                    ModelState::Ready
                },
                holders: r.holders,
                loader_pid: r.loader_pid,
                idle_ns: r.idle_ns,
                memory: match r.memory {
                    sys::RM_MEMORY_SHM => ModelMemory::Shm,
                    sys::RM_MEMORY_CUDA => ModelMemory::Cuda,
                    _ => ModelMemory::Host,
                },
                device_ordinal: if (r.struct_size as usize) < v1_4 {
                    -1
                } else {
                    r.device_ordinal
                },
                device_uuid: r.device_uuid,
                device_bytes: r.device_bytes,
            })
            .collect())
    }

    /// Reclaims what dead processes left in the registry (node scope), and
    /// evicts expired or over-budget idle models (both scopes). ABI 1.2.
    pub fn reclaim_models(&self) -> Result<RegistryReclaimReport> {
        let f = member!(self.plugin(), registry_reclaim, 1, 2)?;
        let mut r = sys::RmRegistryReclaimReport::init();
        // SAFETY: a live context and a struct made with RM_STRUCT_INIT.
        self.check(unsafe { f(self.as_raw(), &mut r) })?;
        Ok(RegistryReclaimReport {
            dead_references: r.dead_references,
            loads_abandoned: r.loads_abandoned,
            models_evicted: r.models_evicted,
            segments_unlinked: r.segments_unlinked,
            bytes_unlinked: r.bytes_unlinked,
        })
    }
}
