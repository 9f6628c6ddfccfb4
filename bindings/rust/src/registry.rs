//! The model registry: `get_or_load` with a closure, handles that release
//! themselves, metrics, listing, eviction and reclaim.

use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::plugin::member;
use crate::sys::{self, AbiStruct};

/// What a loader closure is given: the key, and the two ways to hand the
/// plugin a model.
///
/// - [`ModelLoad::buffer`]: the plugin's buffer (ABI 1.2 loader buffers),
///   which works in both scopes and is required in node scope. The plugin
///   seals it read-only when the loader returns.
/// - [`ModelLoad::provide`]: bytes the host made (the 1.0 way, process
///   scope only; in node scope the load fails with `NotShareable`).
pub struct ModelLoad<'a> {
    raw: *mut sys::RmLoadedModel,
    key: &'a str,
    // What this load handed the plugin that the crate must free if the
    // closure fails afterwards (a provided or fallback Vec).
    owned: Option<*mut Vec<u8>>,
    used: bool,
    len: Option<usize>,
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
        // which is the lifetime of this ModelLoad.
        let raw = unsafe { &mut *self.raw };
        let has_buffer = raw.struct_size as usize >= std::mem::size_of::<sys::RmLoadedModel>()
            && raw.alloc_buffer.is_some();
        if !has_buffer {
            self.provide(vec![0u8; bytes])?;
            let owned = self.owned.expect("just provided");
            // SAFETY: the Vec lives in its Box until the plugin destroys the
            // model or this load frees it; the slice borrows self mutably, so
            // nothing else touches it meanwhile.
            return Ok(unsafe { (*owned).as_mut_slice() });
        }
        let alloc = raw.alloc_buffer.expect("checked");
        let mut buffer = ptr::null_mut();
        // SAFETY: the plugin's own struct and function, called once, while
        // the loader runs.
        let code = unsafe { alloc(self.raw, bytes as u64, &mut buffer) };
        if code != sys::RM_OK || buffer.is_null() {
            return Err(Error::from_code(
                if code == sys::RM_OK { -4 } else { code },
                Error::code_name(code).unwrap_or("UNKNOWN"),
                format!("{}: alloc_buffer({bytes}) failed", self.key),
            ));
        }
        self.used = true;
        self.len = Some(bytes);
        // SAFETY: the plugin gave `bytes` writable, zero-filled bytes that
        // the loader may write until it returns; the slice's borrow of self
        // ends before the closure (and so the loader) returns.
        Ok(unsafe { std::slice::from_raw_parts_mut(buffer as *mut u8, bytes) })
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
    error: Option<Error>,
    len: Option<usize>,
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
        let mut load = ModelLoad {
            raw: out,
            key: &key,
            owned: None,
            used: false,
            len: None,
        };
        let result = loader(&mut load);
        state.len = load.len;
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
/// The model is the bytes its loader wrote: [`ModelHandle::bytes`]. `Send`
/// and `Sync`: a handle may be released on any thread, and the bytes are
/// read-only (sealed loader buffers, or a provided `Vec` nobody writes).
pub struct ModelHandle<'ctx> {
    ctx: &'ctx Context,
    raw: NonNull<sys::RmModelHandle>,
    model: *const u8,
    key: String,
    len: OnceLock<usize>,
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

impl ModelHandle<'_> {
    /// The normalised key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The model's first byte: in node scope the start of this process's
    /// read-only mapping, the same physical pages in every process.
    pub fn as_ptr(&self) -> *const u8 {
        self.model
    }

    /// The model's bytes. Their length comes from the loader that ran in
    /// this call or else from the registry's row for the key (read once per
    /// handle).
    pub fn bytes(&self) -> Result<&[u8]> {
        let len = match self.len.get() {
            Some(len) => *len,
            None => {
                let row = self
                    .ctx
                    .models()?
                    .into_iter()
                    .find(|row| row.key == self.key);
                let len = row
                    .ok_or_else(|| {
                        Error::from_code(-11, "NOT_FOUND", format!("{}: no registry row", self.key))
                    })?
                    .bytes as usize;
                *self.len.get_or_init(|| len)
            }
        };
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: a held handle keeps the model mapped and unchanged (sealed
        // read-only, or a Vec nobody writes) for the handle's lifetime, and
        // the registry counts `len` bytes for it.
        Ok(unsafe { std::slice::from_raw_parts(self.model, len) })
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
            error: None,
            len: None,
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
        let len = OnceLock::new();
        if let Some(known) = state.len {
            let _ = len.set(known);
        }
        Ok(ModelHandle {
            ctx: self,
            raw,
            model: model as *const u8,
            key: normalised,
            len,
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
