//! Reference Rust host for rm_plugin (ABI 1.0).
//!
//! Loads the plugin shared object the way any host must (dlopen with
//! RTLD_NOW | RTLD_LOCAL, dlsym of the single entry point), negotiates a
//! version, and drives the `rm_plugin_v1` vtable through `#[repr(C)]` mirrors
//! of abi/rm_plugin.h. No crates: only std and the dl* functions of libc.
//!
//! Usage: rm_host_rust /path/to/rm_plugin.so
//! Prints one line per check; exits 0 when all pass, 1 otherwise, 2 on usage.
//! Set RM_HOST_VERBOSE=1 to also print every line the plugin logged.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

// ---------------------------------------------------------------------------
// libdl (in libc since glibc 2.34; libdl keeps the link working on older ones)
// ---------------------------------------------------------------------------

#[link(name = "dl")]
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
    fn dlclose(handle: *mut c_void) -> c_int;
}

/// <dlfcn.h> values on Linux (glibc and musl alike).
const RTLD_NOW: c_int = 0x0002;
const RTLD_LOCAL: c_int = 0;

// ---------------------------------------------------------------------------
// The ABI: a mirror of abi/rm_plugin.h
// ---------------------------------------------------------------------------

#[allow(dead_code)] // a faithful mirror: not every constant or field is used
mod abi {
    use std::ffi::{c_char, c_void};
    use std::marker::{PhantomData, PhantomPinned};

    pub const fn rm_abi_version(major: u32, minor: u32) -> u32 {
        (major << 16) | (minor & 0xffff)
    }
    pub const fn rm_abi_version_major(v: u32) -> u32 {
        v >> 16
    }
    pub const fn rm_abi_version_minor(v: u32) -> u32 {
        v & 0xffff
    }
    pub const RM_ABI_MAJOR: u32 = 1;
    /// This host is written against ABI 1.0 on purpose: it checks that a host
    /// built for an older minor works with a newer plugin (error codes are
    /// mirrored in full, since hosts may receive any of them).
    pub const RM_ABI_MINOR: u32 = 0;
    pub const RM_ABI_VERSION_CURRENT: u32 = rm_abi_version(RM_ABI_MAJOR, RM_ABI_MINOR);
    pub const RM_PLUGIN_ENTRY_POINT: &std::ffi::CStr = c"rm_plugin_negotiate";

    // RM_ERROR_MAP (cross-checked against the header text at run time).
    pub const RM_OK: i32 = 0;
    pub const RM_E_INVALID_ARGUMENT: i32 = -1;
    pub const RM_E_INCOMPATIBLE_VERSION: i32 = -2;
    pub const RM_E_STRUCT_SIZE: i32 = -3;
    pub const RM_E_NO_MEMORY: i32 = -4;
    pub const RM_E_FEATURE_DISABLED: i32 = -5;
    pub const RM_E_FEATURE_UNAVAILABLE: i32 = -6;
    pub const RM_E_CONFIG_UNKNOWN_KEY: i32 = -7;
    pub const RM_E_CONFIG_INVALID_VALUE: i32 = -8;
    pub const RM_E_CONFIG_FILE: i32 = -9;
    pub const RM_E_INVALID_KEY: i32 = -10;
    pub const RM_E_NOT_FOUND: i32 = -11;
    pub const RM_E_BUSY: i32 = -12;
    pub const RM_E_LOADER_FAILED: i32 = -13;
    pub const RM_E_LOAD_CYCLE: i32 = -14;
    pub const RM_E_BUFFER_TOO_SMALL: i32 = -15;
    pub const RM_E_FORKED: i32 = -16;
    pub const RM_E_ALLOCATOR: i32 = -17;
    pub const RM_E_SYSTEM: i32 = -18;
    pub const RM_E_SHUTTING_DOWN: i32 = -19;
    pub const RM_E_NOT_SHAREABLE: i32 = -20;
    pub const RM_E_INVALID_DESCRIPTOR: i32 = -21;
    pub const RM_E_STALE_DESCRIPTOR: i32 = -22;
    pub const RM_E_QUOTA_EXCEEDED: i32 = -23;
    pub const RM_E_CORRUPT_STATE: i32 = -24;
    pub const RM_E_DEVICE_UNAVAILABLE: i32 = -25;

    /// (code, NAME) for every constant above, to compare with the header.
    pub const RUST_ERROR_CONSTS: &[(i32, &str)] = &[
        (RM_OK, "OK"),
        (RM_E_INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (RM_E_INCOMPATIBLE_VERSION, "INCOMPATIBLE_VERSION"),
        (RM_E_STRUCT_SIZE, "STRUCT_SIZE"),
        (RM_E_NO_MEMORY, "NO_MEMORY"),
        (RM_E_FEATURE_DISABLED, "FEATURE_DISABLED"),
        (RM_E_FEATURE_UNAVAILABLE, "FEATURE_UNAVAILABLE"),
        (RM_E_CONFIG_UNKNOWN_KEY, "CONFIG_UNKNOWN_KEY"),
        (RM_E_CONFIG_INVALID_VALUE, "CONFIG_INVALID_VALUE"),
        (RM_E_CONFIG_FILE, "CONFIG_FILE"),
        (RM_E_INVALID_KEY, "INVALID_KEY"),
        (RM_E_NOT_FOUND, "NOT_FOUND"),
        (RM_E_BUSY, "BUSY"),
        (RM_E_LOADER_FAILED, "LOADER_FAILED"),
        (RM_E_LOAD_CYCLE, "LOAD_CYCLE"),
        (RM_E_BUFFER_TOO_SMALL, "BUFFER_TOO_SMALL"),
        (RM_E_FORKED, "FORKED"),
        (RM_E_ALLOCATOR, "ALLOCATOR"),
        (RM_E_SYSTEM, "SYSTEM"),
        (RM_E_SHUTTING_DOWN, "SHUTTING_DOWN"),
        (RM_E_NOT_SHAREABLE, "NOT_SHAREABLE"),
        (RM_E_INVALID_DESCRIPTOR, "INVALID_DESCRIPTOR"),
        (RM_E_STALE_DESCRIPTOR, "STALE_DESCRIPTOR"),
        (RM_E_QUOTA_EXCEEDED, "QUOTA_EXCEEDED"),
        (RM_E_CORRUPT_STATE, "CORRUPT_STATE"),
        (RM_E_DEVICE_UNAVAILABLE, "DEVICE_UNAVAILABLE"),
    ];

    pub const RM_FEATURE_MODEL_REGISTRY: u64 = 1 << 0;
    pub const RM_FEATURE_SHARED_MEMORY: u64 = 1 << 1;
    pub const RM_FEATURE_CUDA_IPC: u64 = 1 << 2;

    pub const RM_LOG_ERROR: i32 = 0;
    pub const RM_LOG_WARN: i32 = 1;
    pub const RM_LOG_INFO: i32 = 2;
    pub const RM_LOG_DEBUG: i32 = 3;

    pub const RM_CONTEXT_IGNORE_ENV: u64 = 1 << 0;
    pub const RM_MODEL_KEY_MAX: usize = 256;

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmHostServices {
        pub struct_size: u32,
        pub abi_version: u32,
        pub user: *mut c_void,
        pub log:
            Option<unsafe extern "C" fn(user: *mut c_void, level: i32, message: *const c_char)>,
        pub monotonic_ns: Option<unsafe extern "C" fn(user: *mut c_void) -> u64>,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmNegotiateRequest {
        pub struct_size: u32,
        pub abi_version: u32,
        pub min_abi_version: u32,
        pub max_abi_version: u32,
        pub services: *const RmHostServices,
        pub error_buffer: *mut c_char,
        pub error_buffer_size: u64,
        pub reserved: [u64; 4],
    }

    pub type RmPluginNegotiateFn = unsafe extern "C" fn(
        request: *const RmNegotiateRequest,
        out_abi_version: *mut u32,
        out_vtable: *mut *const RmPluginV1,
    ) -> i32;

    /// Opaque `rm_context`.
    #[repr(C)]
    pub struct RmContext {
        _data: [u8; 0],
        _marker: PhantomData<(*mut u8, PhantomPinned)>,
    }

    /// Opaque `rm_model_handle`.
    #[repr(C)]
    pub struct RmModelHandle {
        _data: [u8; 0],
        _marker: PhantomData<(*mut u8, PhantomPinned)>,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmConfigEntry {
        pub key: *const c_char,
        pub value: *const c_char,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmContextOptions {
        pub struct_size: u32,
        pub abi_version: u32,
        pub entries: *const RmConfigEntry,
        pub entry_count: u64,
        pub config_path: *const c_char,
        pub flags: u64,
        pub reserved: [u64; 4],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmContextInfo {
        pub struct_size: u32,
        pub abi_version: u32,
        pub negotiated_abi_version: u32,
        pub reserved0: u32,
        pub features_built: u64,
        pub features_enabled: u64,
        pub allocator: [c_char; 96],
        pub allocator_arena: u32,
        pub reserved1: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmLoadedModel {
        pub struct_size: u32,
        pub abi_version: u32,
        pub model: *mut c_void,
        pub bytes: u64,
        pub destroy: Option<unsafe extern "C" fn(model: *mut c_void, destroy_user: *mut c_void)>,
        pub destroy_user: *mut c_void,
    }

    pub type RmModelLoaderFn = unsafe extern "C" fn(
        loader_user: *mut c_void,
        key: *const c_char,
        out: *mut RmLoadedModel,
    ) -> i32;

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmModelInfo {
        pub struct_size: u32,
        pub abi_version: u32,
        pub key: [c_char; RM_MODEL_KEY_MAX],
        pub device: [c_char; 32],
        pub bytes: u64,
        pub refcount: u64,
        pub loaded_at_ns: u64,
        pub last_used_ns: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RmRegistryMetrics {
        pub struct_size: u32,
        pub abi_version: u32,
        pub hits: u64,
        pub misses: u64,
        pub loads: u64,
        pub load_failures: u64,
        pub evictions: u64,
        pub evictions_ttl: u64,
        pub evictions_lru: u64,
        pub evictions_explicit: u64,
        pub models: u64,
        pub bytes: u64,
        pub over_budget: u64,
        pub hit_rate: f64,
    }

    #[repr(C)]
    pub struct RmPluginV1 {
        pub struct_size: u32,
        pub abi_version: u32,
        pub features_built: u64,
        pub name: *const c_char,
        pub version: *const c_char,
        pub error_name: Option<unsafe extern "C" fn(code: i32) -> *const c_char>,
        pub strerror: Option<unsafe extern "C" fn(code: i32) -> *const c_char>,
        pub context_create: Option<
            unsafe extern "C" fn(
                options: *const RmContextOptions,
                out_context: *mut *mut RmContext,
            ) -> i32,
        >,
        pub context_destroy: Option<unsafe extern "C" fn(context: *mut RmContext)>,
        pub context_last_error:
            Option<unsafe extern "C" fn(context: *const RmContext) -> *const c_char>,
        pub context_info:
            Option<unsafe extern "C" fn(context: *const RmContext, out: *mut RmContextInfo) -> i32>,
        pub config_get: Option<
            unsafe extern "C" fn(
                context: *const RmContext,
                key: *const c_char,
                buffer: *mut c_char,
                buffer_size: u64,
                out_needed: *mut u64,
            ) -> i32,
        >,
        pub config_key_at: Option<unsafe extern "C" fn(index: u32) -> *const c_char>,
        pub model_key_normalize: Option<
            unsafe extern "C" fn(key: *const c_char, out: *mut c_char, out_size: u64) -> i32,
        >,
        pub model_get_or_load: Option<
            unsafe extern "C" fn(
                context: *mut RmContext,
                key: *const c_char,
                loader: Option<RmModelLoaderFn>,
                loader_user: *mut c_void,
                out_handle: *mut *mut RmModelHandle,
                out_model: *mut *mut c_void,
            ) -> i32,
        >,
        pub model_release: Option<
            unsafe extern "C" fn(context: *mut RmContext, handle: *mut RmModelHandle) -> i32,
        >,
        pub model_evict:
            Option<unsafe extern "C" fn(context: *mut RmContext, key: *const c_char) -> i32>,
        pub registry_metrics: Option<
            unsafe extern "C" fn(context: *mut RmContext, out: *mut RmRegistryMetrics) -> i32,
        >,
        pub registry_list: Option<
            unsafe extern "C" fn(
                context: *mut RmContext,
                out: *mut RmModelInfo,
                info_struct_size: u32,
                capacity: u32,
                out_count: *mut u32,
            ) -> i32,
        >,
    }

    /// RM_STRUCT_INIT: every versioned struct starts with struct_size and
    /// abi_version; the rest is zero (NULL pointers, None callbacks).
    ///
    /// # Safety
    /// Implementors must be `#[repr(C)]`, begin with two `u32` fields
    /// (struct_size, abi_version) and be valid when all-zero.
    pub unsafe trait AbiStruct: Sized {
        fn init() -> Self {
            // SAFETY: the trait contract: all-zero is a valid value, and the
            // first two u32 fields are struct_size and abi_version.
            unsafe {
                let mut value: Self = std::mem::zeroed();
                let head = &mut value as *mut Self as *mut u32;
                *head = std::mem::size_of::<Self>() as u32;
                *head.add(1) = RM_ABI_VERSION_CURRENT;
                value
            }
        }
    }
    unsafe impl AbiStruct for RmHostServices {}
    unsafe impl AbiStruct for RmNegotiateRequest {}
    unsafe impl AbiStruct for RmContextOptions {}
    unsafe impl AbiStruct for RmContextInfo {}
    unsafe impl AbiStruct for RmLoadedModel {}
    unsafe impl AbiStruct for RmModelInfo {}
    unsafe impl AbiStruct for RmRegistryMetrics {}
}

use abi::*;

// ---------------------------------------------------------------------------
// Compile-time layout checks: sizes and offsets of the C header on LP64
// (x86_64, aarch64), as gcc computes them for abi/rm_plugin.h.
// ---------------------------------------------------------------------------

#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{align_of, offset_of};

    assert!(size_of::<RmHostServices>() == 32 && align_of::<RmHostServices>() == 8);
    assert!(offset_of!(RmHostServices, abi_version) == 4);
    assert!(offset_of!(RmHostServices, user) == 8);
    assert!(offset_of!(RmHostServices, log) == 16);
    assert!(offset_of!(RmHostServices, monotonic_ns) == 24);

    assert!(size_of::<RmNegotiateRequest>() == 72 && align_of::<RmNegotiateRequest>() == 8);
    assert!(offset_of!(RmNegotiateRequest, min_abi_version) == 8);
    assert!(offset_of!(RmNegotiateRequest, max_abi_version) == 12);
    assert!(offset_of!(RmNegotiateRequest, services) == 16);
    assert!(offset_of!(RmNegotiateRequest, error_buffer) == 24);
    assert!(offset_of!(RmNegotiateRequest, error_buffer_size) == 32);
    assert!(offset_of!(RmNegotiateRequest, reserved) == 40);

    assert!(size_of::<RmConfigEntry>() == 16);
    assert!(offset_of!(RmConfigEntry, value) == 8);

    assert!(size_of::<RmContextOptions>() == 72 && align_of::<RmContextOptions>() == 8);
    assert!(offset_of!(RmContextOptions, entries) == 8);
    assert!(offset_of!(RmContextOptions, entry_count) == 16);
    assert!(offset_of!(RmContextOptions, config_path) == 24);
    assert!(offset_of!(RmContextOptions, flags) == 32);
    assert!(offset_of!(RmContextOptions, reserved) == 40);

    assert!(size_of::<RmContextInfo>() == 136 && align_of::<RmContextInfo>() == 8);
    assert!(offset_of!(RmContextInfo, negotiated_abi_version) == 8);
    assert!(offset_of!(RmContextInfo, reserved0) == 12);
    assert!(offset_of!(RmContextInfo, features_built) == 16);
    assert!(offset_of!(RmContextInfo, features_enabled) == 24);
    assert!(offset_of!(RmContextInfo, allocator) == 32);
    assert!(offset_of!(RmContextInfo, allocator_arena) == 128);
    assert!(offset_of!(RmContextInfo, reserved1) == 132);

    assert!(size_of::<RmLoadedModel>() == 40 && align_of::<RmLoadedModel>() == 8);
    assert!(offset_of!(RmLoadedModel, model) == 8);
    assert!(offset_of!(RmLoadedModel, bytes) == 16);
    assert!(offset_of!(RmLoadedModel, destroy) == 24);
    assert!(offset_of!(RmLoadedModel, destroy_user) == 32);

    assert!(size_of::<RmModelInfo>() == 328 && align_of::<RmModelInfo>() == 8);
    assert!(offset_of!(RmModelInfo, key) == 8);
    assert!(offset_of!(RmModelInfo, device) == 264);
    assert!(offset_of!(RmModelInfo, bytes) == 296);
    assert!(offset_of!(RmModelInfo, refcount) == 304);
    assert!(offset_of!(RmModelInfo, loaded_at_ns) == 312);
    assert!(offset_of!(RmModelInfo, last_used_ns) == 320);

    assert!(size_of::<RmRegistryMetrics>() == 104 && align_of::<RmRegistryMetrics>() == 8);
    assert!(offset_of!(RmRegistryMetrics, hits) == 8);
    assert!(offset_of!(RmRegistryMetrics, misses) == 16);
    assert!(offset_of!(RmRegistryMetrics, loads) == 24);
    assert!(offset_of!(RmRegistryMetrics, load_failures) == 32);
    assert!(offset_of!(RmRegistryMetrics, evictions) == 40);
    assert!(offset_of!(RmRegistryMetrics, evictions_ttl) == 48);
    assert!(offset_of!(RmRegistryMetrics, evictions_lru) == 56);
    assert!(offset_of!(RmRegistryMetrics, evictions_explicit) == 64);
    assert!(offset_of!(RmRegistryMetrics, models) == 72);
    assert!(offset_of!(RmRegistryMetrics, bytes) == 80);
    assert!(offset_of!(RmRegistryMetrics, over_budget) == 88);
    assert!(offset_of!(RmRegistryMetrics, hit_rate) == 96);

    assert!(size_of::<RmPluginV1>() == 144 && align_of::<RmPluginV1>() == 8);
    assert!(offset_of!(RmPluginV1, features_built) == 8);
    assert!(offset_of!(RmPluginV1, name) == 16);
    assert!(offset_of!(RmPluginV1, version) == 24);
    assert!(offset_of!(RmPluginV1, error_name) == 32);
    assert!(offset_of!(RmPluginV1, strerror) == 40);
    assert!(offset_of!(RmPluginV1, context_create) == 48);
    assert!(offset_of!(RmPluginV1, context_destroy) == 56);
    assert!(offset_of!(RmPluginV1, context_last_error) == 64);
    assert!(offset_of!(RmPluginV1, context_info) == 72);
    assert!(offset_of!(RmPluginV1, config_get) == 80);
    assert!(offset_of!(RmPluginV1, config_key_at) == 88);
    assert!(offset_of!(RmPluginV1, model_key_normalize) == 96);
    assert!(offset_of!(RmPluginV1, model_get_or_load) == 104);
    assert!(offset_of!(RmPluginV1, model_release) == 112);
    assert!(offset_of!(RmPluginV1, model_evict) == 120);
    assert!(offset_of!(RmPluginV1, registry_metrics) == 128);
    assert!(offset_of!(RmPluginV1, registry_list) == 136);

    // Nullable C function pointers are one pointer wide.
    assert!(size_of::<Option<RmModelLoaderFn>>() == 8);
    assert!(size_of::<Option<RmPluginNegotiateFn>>() == 8);
};

/// The header itself, to cross-check the Rust mirror against RM_ERROR_MAP
/// and to learn the RM_PLUGIN_VERSION_STRING the plugin must report.
const HEADER: &str = include_str!("../../../abi/rm_plugin.h");

/// The rows of RM_ERROR_MAP: (code, NAME, "message").
fn header_error_map() -> Vec<(i32, String, String)> {
    let mut rows = Vec::new();
    for line in HEADER.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("XX(") else {
            continue;
        };
        let Some(end) = rest.rfind(')') else { continue };
        let inner = &rest[..end];
        let mut parts = inner.splitn(3, ',');
        let (Some(code), Some(name), Some(message)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(code) = code.trim().parse::<i32>() else {
            continue;
        };
        let message = message.trim().trim_matches('"').to_string();
        rows.push((code, name.trim().to_string(), message));
    }
    rows
}

/// The string value of `#define NAME "value"` in the header.
fn header_define_string(name: &str) -> Option<String> {
    HEADER.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("#define ")?
            .trim_start()
            .strip_prefix(name)?;
        let value = rest.trim();
        (value.len() >= 2 && value.starts_with('"') && value.ends_with('"'))
            .then(|| value[1..value.len() - 1].to_string())
    })
}

// ---------------------------------------------------------------------------
// Host services: a log sink and a virtual monotonic clock
// ---------------------------------------------------------------------------

static LOG_LINES: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());
/// Its address is the `user` pointer of the host services.
static SERVICES_USER: u64 = 0x5e41_1ce5;
static SERVICES_BAD_USER: AtomicUsize = AtomicUsize::new(0);

fn services_user() -> *mut c_void {
    &SERVICES_USER as *const u64 as *mut c_void
}

unsafe extern "C" fn host_log(user: *mut c_void, level: i32, message: *const c_char) {
    if user != services_user() {
        SERVICES_BAD_USER.fetch_add(1, Ordering::SeqCst);
    }
    let text = if message.is_null() {
        "<NULL message>".to_string()
    } else {
        // SAFETY: the plugin passes a NUL-terminated line valid during the call.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    };
    LOG_LINES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((level, text));
}

fn log_snapshot() -> Vec<(i32, String)> {
    LOG_LINES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn level_name(level: i32) -> &'static str {
    match level {
        RM_LOG_ERROR => "error",
        RM_LOG_WARN => "warn",
        RM_LOG_INFO => "info",
        RM_LOG_DEBUG => "debug",
        _ => "?",
    }
}

/// The host clock starts far from CLOCK_MONOTONIC so that timestamps the
/// plugin reports show which clock it used.
const CLOCK_OFFSET_NS: u64 = 1 << 50;
static CLOCK_START: OnceLock<Instant> = OnceLock::new();
static CLOCK_CALLS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn host_clock(user: *mut c_void) -> u64 {
    if user != services_user() {
        SERVICES_BAD_USER.fetch_add(1, Ordering::SeqCst);
    }
    CLOCK_CALLS.fetch_add(1, Ordering::SeqCst);
    let start = CLOCK_START.get_or_init(Instant::now);
    CLOCK_OFFSET_NS + start.elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------
// Model loaders
// ---------------------------------------------------------------------------

const MODEL_BYTES: usize = 4096;
static LOADER_USER: u64 = 0x10ad;
static LOADER_CALLS: AtomicUsize = AtomicUsize::new(0);
static LOADER_BAD: AtomicUsize = AtomicUsize::new(0);
static LOADER_KEYS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static FAILING_LOADER_CALLS: AtomicUsize = AtomicUsize::new(0);
static DESTROYS: AtomicUsize = AtomicUsize::new(0);
static DESTROY_BAD: AtomicUsize = AtomicUsize::new(0);

fn loader_user() -> *mut c_void {
    &LOADER_USER as *const u64 as *mut c_void
}

/// Boxes a Vec<u8> as the model; its destroy callback frees it.
unsafe extern "C" fn vec_loader(
    user: *mut c_void,
    key: *const c_char,
    out: *mut RmLoadedModel,
) -> i32 {
    LOADER_CALLS.fetch_add(1, Ordering::SeqCst);
    if user != loader_user() || key.is_null() || out.is_null() {
        LOADER_BAD.fetch_add(1, Ordering::SeqCst);
        return RM_E_INVALID_ARGUMENT;
    }
    // SAFETY: key is the NUL-terminated normalised key, valid for the call.
    let key = unsafe { CStr::from_ptr(key) }
        .to_string_lossy()
        .into_owned();
    LOADER_KEYS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(key);
    // SAFETY: out points to the plugin's rm_loaded_model for this call.
    let out = unsafe { &mut *out };
    // Write only what the plugin's struct has room for (all of 1.0).
    if (out.struct_size as usize) < size_of::<RmLoadedModel>()
        || abi::rm_abi_version_major(out.abi_version) != 1
        || !out.model.is_null()
        || out.destroy.is_some()
    {
        LOADER_BAD.fetch_add(1, Ordering::SeqCst);
        return RM_E_STRUCT_SIZE;
    }
    let model: Box<Vec<u8>> = Box::new(vec![0xa5; MODEL_BYTES]);
    out.bytes = model.len() as u64;
    out.model = Box::into_raw(model) as *mut c_void;
    out.destroy = Some(destroy_vec_model);
    out.destroy_user = loader_user();
    RM_OK
}

unsafe extern "C" fn destroy_vec_model(model: *mut c_void, destroy_user: *mut c_void) {
    if destroy_user != loader_user() || model.is_null() {
        DESTROY_BAD.fetch_add(1, Ordering::SeqCst);
    }
    if !model.is_null() {
        // SAFETY: `model` came from Box::into_raw in vec_loader, and the
        // plugin calls destroy exactly once per model.
        drop(unsafe { Box::from_raw(model as *mut Vec<u8>) });
    }
    DESTROYS.fetch_add(1, Ordering::SeqCst);
}

const LOADER_ERROR: i32 = -1000;

unsafe extern "C" fn failing_loader(
    _user: *mut c_void,
    _key: *const c_char,
    _out: *mut RmLoadedModel,
) -> i32 {
    FAILING_LOADER_CALLS.fetch_add(1, Ordering::SeqCst);
    LOADER_ERROR
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Copies a NUL-terminated C string (None for NULL).
unsafe fn cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller vouches for a NUL-terminated string.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// Text of a fixed char array up to its first NUL.
fn array_str(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn ver(v: u32) -> String {
    format!(
        "{}.{}",
        abi::rm_abi_version_major(v),
        abi::rm_abi_version_minor(v)
    )
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

struct Checks {
    run: usize,
    failed: usize,
}

impl Checks {
    fn record(&mut self, name: &str, result: Result<String, String>) -> bool {
        self.run += 1;
        match result {
            Ok(detail) if detail.is_empty() => {
                println!("ok   {:2} {}", self.run, name);
                true
            }
            Ok(detail) => {
                println!("ok   {:2} {}: {}", self.run, name, detail);
                true
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {:2} {}: {}", self.run, name, why);
                false
            }
        }
    }

    fn finish(&self, complete: bool) -> i32 {
        let verbose = std::env::var_os("RM_HOST_VERBOSE").is_some_and(|v| v != "0");
        if self.failed > 0 || verbose {
            for (level, line) in log_snapshot() {
                println!("  plugin log [{}] {}", level_name(level), line);
            }
        }
        if self.failed == 0 && complete {
            println!("rust host: all {} checks passed", self.run);
            0
        } else {
            if !complete {
                println!("rust host: stopped early after a failed prerequisite");
            }
            println!("rust host: {} of {} checks failed", self.failed, self.run);
            1
        }
    }
}

/// A negotiation request for [min, max] with optional services and buffer.
fn request(
    min: u32,
    max: u32,
    services: *const RmHostServices,
    error_buffer: &mut [c_char],
) -> RmNegotiateRequest {
    let mut req = RmNegotiateRequest::init();
    req.min_abi_version = min;
    req.max_abi_version = max;
    req.services = services;
    req.error_buffer = error_buffer.as_mut_ptr();
    req.error_buffer_size = error_buffer.len() as u64;
    req
}

/// Calls negotiate with sentinels in the outputs, to see that it sets them.
unsafe fn negotiate(
    f: RmPluginNegotiateFn,
    req: *const RmNegotiateRequest,
) -> (i32, u32, *const RmPluginV1) {
    let mut picked: u32 = 0xdead_beef;
    let mut vt: *const RmPluginV1 = ptr::NonNull::dangling().as_ptr();
    // SAFETY: valid request and output pointers.
    let rc = unsafe { f(req, &mut picked, &mut vt) };
    (rc, picked, vt)
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() != 2 {
        eprintln!("usage: rm_host_rust /path/to/rm_plugin.so");
        return 2;
    }
    let so_path = {
        use std::os::unix::ffi::OsStrExt;
        match std::ffi::CString::new(args[1].as_bytes()) {
            Ok(p) => p,
            Err(_) => {
                eprintln!("rm_host_rust: path contains a NUL byte");
                return 2;
            }
        }
    };
    CLOCK_START.get_or_init(Instant::now);
    let mut c = Checks { run: 0, failed: 0 };
    run_checks(&mut c, &so_path)
}

/// Every `unsafe` block below is a call through the C ABI that follows the
/// contract of abi/rm_plugin.h (valid pointers, live context, NUL-terminated
/// strings).
fn run_checks(c: &mut Checks, so_path: &CStr) -> i32 {
    // -- 1. dlopen / dlsym ---------------------------------------------------
    let mut so: *mut c_void = ptr::null_mut();
    let ok = c.record(
        "dlopen(RTLD_NOW | RTLD_LOCAL)",
        (|| {
            so = unsafe { dlopen(so_path.as_ptr(), RTLD_NOW | RTLD_LOCAL) };
            ensure!(
                !so.is_null(),
                "{}",
                unsafe { cstr(dlerror()) }.unwrap_or_default()
            );
            Ok(so_path.to_string_lossy().into_owned())
        })(),
    );
    if !ok {
        return c.finish(false);
    }

    let mut negotiate_fn: Option<RmPluginNegotiateFn> = None;
    let ok = c.record(
        "dlsym(\"rm_plugin_negotiate\")",
        (|| {
            unsafe { dlerror() };
            let sym = unsafe { dlsym(so, RM_PLUGIN_ENTRY_POINT.as_ptr()) };
            ensure!(
                !sym.is_null(),
                "{}",
                unsafe { cstr(dlerror()) }.unwrap_or_default()
            );
            // SAFETY: the symbol is documented as an rm_plugin_negotiate_fn.
            negotiate_fn =
                Some(unsafe { std::mem::transmute::<*mut c_void, RmPluginNegotiateFn>(sym) });
            Ok(String::new())
        })(),
    );
    let Some(negotiate_fn) = negotiate_fn.filter(|_| ok) else {
        return c.finish(false);
    };

    // -- 2./3. negotiation, with the Rust log sink and clock -------------------
    let mut services = RmHostServices::init();
    services.user = services_user();
    services.log = Some(host_log);
    services.monotonic_ns = Some(host_clock);

    c.record(
        "negotiate rejects malformed requests",
        (|| {
            let mut buf = [0 as c_char; 256];
            let mut small = request(RM_ABI_VERSION_CURRENT, RM_ABI_VERSION_CURRENT, &services, &mut buf);
            small.struct_size = 16;
            let (rc, picked, vt) = unsafe { negotiate(negotiate_fn, &small) };
            ensure!(
                rc == RM_E_STRUCT_SIZE && picked == 0 && vt.is_null(),
                "struct_size 16: rc {rc}, version {picked:#x}, vtable {vt:p} (want {RM_E_STRUCT_SIZE}, 0, NULL)"
            );

            let mut reserved = request(RM_ABI_VERSION_CURRENT, RM_ABI_VERSION_CURRENT, &services, &mut buf);
            reserved.reserved[3] = 1;
            let (rc, _, vt) = unsafe { negotiate(negotiate_fn, &reserved) };
            ensure!(rc == RM_E_INVALID_ARGUMENT && vt.is_null(), "reserved[3] = 1: rc {rc} (want {RM_E_INVALID_ARGUMENT})");

            let inverted = request(abi::rm_abi_version(2, 0), abi::rm_abi_version(1, 0), &services, &mut buf);
            let (rc, _, vt) = unsafe { negotiate(negotiate_fn, &inverted) };
            ensure!(rc == RM_E_INVALID_ARGUMENT && vt.is_null(), "min > max: rc {rc} (want {RM_E_INVALID_ARGUMENT})");

            let mut tiny_services = services;
            tiny_services.struct_size = 8;
            let bad_services = request(RM_ABI_VERSION_CURRENT, RM_ABI_VERSION_CURRENT, &tiny_services, &mut buf);
            let (rc, _, vt) = unsafe { negotiate(negotiate_fn, &bad_services) };
            ensure!(
                rc == RM_E_INVALID_ARGUMENT && vt.is_null(),
                "services.struct_size 8: rc {rc} (want {RM_E_INVALID_ARGUMENT})"
            );

            let (rc, _, _) = unsafe { negotiate(negotiate_fn, ptr::null()) };
            ensure!(rc == RM_E_INVALID_ARGUMENT, "NULL request: rc {rc} (want {RM_E_INVALID_ARGUMENT})");
            Ok("STRUCT_SIZE, reserved, min > max, small services, NULL request".into())
        })(),
    );

    c.record(
        "negotiate 2.0..2.0 -> RM_E_INCOMPATIBLE_VERSION",
        (|| {
            let mut buf = [0 as c_char; 256];
            let req = request(
                abi::rm_abi_version(2, 0),
                abi::rm_abi_version(2, 0),
                &services,
                &mut buf,
            );
            let (rc, picked, vt) = unsafe { negotiate(negotiate_fn, &req) };
            let message = array_str(&buf);
            ensure!(
                rc == RM_E_INCOMPATIBLE_VERSION,
                "rc {rc} (want {RM_E_INCOMPATIBLE_VERSION})"
            );
            ensure!(vt.is_null(), "vtable {vt:p}, want NULL");
            ensure!(picked == 0, "version {picked:#x}, want 0");
            ensure!(!message.is_empty(), "error_buffer left empty");
            Ok(format!("\"{message}\""))
        })(),
    );

    c.record(
        "negotiate 1.0..2.0 picks the plugin's highest 1.x (this host only uses 1.0)",
        (|| {
            let mut buf = [0 as c_char; 256];
            let req = request(
                abi::rm_abi_version(1, 0),
                abi::rm_abi_version(2, 0),
                &services,
                &mut buf,
            );
            let (rc, picked, vt) = unsafe { negotiate(negotiate_fn, &req) };
            ensure!(
                rc == RM_OK && !vt.is_null() && picked >> 16 == 1
                    && picked == unsafe { (*vt).abi_version },
                "rc {rc}, version {picked:#x}, vtable {vt:p}"
            );
            ensure!(
                buf[0] == 0,
                "error_buffer written on success: \"{}\"",
                array_str(&buf)
            );
            Ok(String::new())
        })(),
    );

    let mut vt_ptr: *const RmPluginV1 = ptr::null();
    let ok = c.record(
        "negotiate 1.0..1.0 with host services (log sink, clock)",
        (|| {
            let mut buf = [0 as c_char; 256];
            let req = request(
                abi::rm_abi_version(1, 0),
                abi::rm_abi_version(1, 0),
                &services,
                &mut buf,
            );
            let (rc, picked, vt) = unsafe { negotiate(negotiate_fn, &req) };
            ensure!(rc == RM_OK, "rc {rc}: \"{}\"", array_str(&buf));
            ensure!(
                picked == abi::rm_abi_version(1, 0),
                "version {}",
                ver(picked)
            );
            ensure!(!vt.is_null(), "vtable NULL");
            vt_ptr = vt;
            Ok(format!("version {}", ver(picked)))
        })(),
    );
    if !ok {
        return c.finish(false);
    }
    let vt: &RmPluginV1 = unsafe { &*vt_ptr };

    let ok = c.record(
        "vtable: struct_size, name, version, every 1.0 member set",
        (|| {
            ensure!(
                vt.struct_size as usize >= size_of::<RmPluginV1>(),
                "struct_size {} < sizeof(rm_plugin_v1) {}",
                vt.struct_size,
                size_of::<RmPluginV1>()
            );
            ensure!(
                abi::rm_abi_version_major(vt.abi_version) == 1
                    && vt.abi_version >= RM_ABI_VERSION_CURRENT,
                "abi_version {}",
                ver(vt.abi_version)
            );
            let name = unsafe { cstr(vt.name) };
            ensure!(name.as_deref() == Some("rm_plugin"), "name {name:?}");
            let version = unsafe { cstr(vt.version) };
            let want = header_define_string("RM_PLUGIN_VERSION_STRING");
            ensure!(
                want.is_some(),
                "RM_PLUGIN_VERSION_STRING not found in the header"
            );
            ensure!(version == want, "version {version:?}, header says {want:?}");
            let missing: Vec<&str> = [
                ("error_name", vt.error_name.is_none()),
                ("strerror", vt.strerror.is_none()),
                ("context_create", vt.context_create.is_none()),
                ("context_destroy", vt.context_destroy.is_none()),
                ("context_last_error", vt.context_last_error.is_none()),
                ("context_info", vt.context_info.is_none()),
                ("config_get", vt.config_get.is_none()),
                ("config_key_at", vt.config_key_at.is_none()),
                ("model_key_normalize", vt.model_key_normalize.is_none()),
                ("model_get_or_load", vt.model_get_or_load.is_none()),
                ("model_release", vt.model_release.is_none()),
                ("model_evict", vt.model_evict.is_none()),
                ("registry_metrics", vt.registry_metrics.is_none()),
                ("registry_list", vt.registry_list.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, none)| none.then_some(n))
            .collect();
            ensure!(missing.is_empty(), "NULL members: {}", missing.join(", "));
            Ok(format!(
                "struct_size {}, abi {}, name \"rm_plugin\", version {}, features_built {:#x}",
                vt.struct_size,
                ver(vt.abi_version),
                version.unwrap_or_default(),
                vt.features_built
            ))
        })(),
    );
    if !ok {
        return c.finish(false);
    }
    let error_name = vt.error_name.unwrap();
    let strerror = vt.strerror.unwrap();
    let context_create = vt.context_create.unwrap();
    let context_destroy = vt.context_destroy.unwrap();
    let context_last_error = vt.context_last_error.unwrap();
    let context_info = vt.context_info.unwrap();
    let config_get = vt.config_get.unwrap();
    let config_key_at = vt.config_key_at.unwrap();
    let model_key_normalize = vt.model_key_normalize.unwrap();
    let model_get_or_load = vt.model_get_or_load.unwrap();
    let model_release = vt.model_release.unwrap();
    let model_evict = vt.model_evict.unwrap();
    let registry_metrics = vt.registry_metrics.unwrap();
    let registry_list = vt.registry_list.unwrap();
    // A plugin configured with -Dmodel-registry=disabled is valid too: then
    // the registry checks become "reports RM_E_FEATURE_UNAVAILABLE" checks.
    let registry_built = vt.features_built & RM_FEATURE_MODEL_REGISTRY != 0;
    if !registry_built {
        println!(
            "note: features_built {:#x} lacks model-registry: checking that it is reported unavailable",
            vt.features_built
        );
    }

    c.record(
        "error codes: Rust constants, header RM_ERROR_MAP and error_name/strerror agree",
        (|| {
            let map = header_error_map();
            ensure!(
                map.len() == RUST_ERROR_CONSTS.len(),
                "header has {} codes, Rust mirror {}",
                map.len(),
                RUST_ERROR_CONSTS.len()
            );
            for ((code, name, message), (rcode, rname)) in map.iter().zip(RUST_ERROR_CONSTS) {
                ensure!(
                    code == rcode && name == rname,
                    "header {code} {name} vs Rust {rcode} {rname}"
                );
                let got_name = unsafe { cstr(error_name(*code)) };
                ensure!(
                    got_name.as_deref() == Some(name.as_str()),
                    "error_name({code}) = {got_name:?}, want {name}"
                );
                let got_message = unsafe { cstr(strerror(*code)) };
                ensure!(
                    got_message.as_deref() == Some(message.as_str()),
                    "strerror({code}) = {got_message:?}, want {message:?}"
                );
            }
            let unknown = unsafe { (cstr(error_name(12345)), cstr(strerror(12345))) };
            ensure!(
                unknown.0.as_deref() == Some("UNKNOWN")
                    && unknown.1.as_deref() == Some("unknown error"),
                "code 12345 gives {unknown:?}"
            );
            Ok(format!("{} codes", map.len()))
        })(),
    );

    c.record(
        "config_key_at lists the documented keys, then NULL",
        (|| {
            let mut keys = Vec::new();
            for i in 0..64u32 {
                match unsafe { cstr(config_key_at(i)) } {
                    Some(k) => keys.push(k),
                    None => break,
                }
            }
            for want in [
                "features",
                "log.level",
                "registry.ttl_s",
                "registry.max_bytes",
                "registry.max_models",
            ] {
                ensure!(
                    keys.iter().any(|k| k == want),
                    "\"{want}\" missing from {keys:?}"
                );
            }
            ensure!(keys.len() < 64, "no NULL after 64 keys");
            Ok(keys.join(", "))
        })(),
    );

    c.record(
        "model_key_normalize(\"m@CUDA:007\") -> \"m@cuda:7\"",
        (|| {
            let mut out = [0 as c_char; RM_MODEL_KEY_MAX];
            let rc = unsafe {
                model_key_normalize(c"m@CUDA:007".as_ptr(), out.as_mut_ptr(), out.len() as u64)
            };
            if !registry_built && rc == RM_E_FEATURE_UNAVAILABLE {
                // Not among the codes the header documents for this function.
                return Ok(
                    "RM_E_FEATURE_UNAVAILABLE (registry not built; undocumented code)".into(),
                );
            }
            ensure!(
                rc == RM_OK && array_str(&out) == "m@cuda:7",
                "rc {rc}, \"{}\"",
                array_str(&out)
            );
            let rc = unsafe {
                model_key_normalize(c"bad key".as_ptr(), out.as_mut_ptr(), out.len() as u64)
            };
            ensure!(
                rc == RM_E_INVALID_KEY,
                "\"bad key\": rc {rc} (want {RM_E_INVALID_KEY})"
            );
            Ok(String::new())
        })(),
    );

    // -- 4. contexts and configuration --------------------------------------
    if !registry_built {
        c.record(
            "context_create(features=model-registry) -> RM_E_FEATURE_UNAVAILABLE",
            (|| {
                let want = [RmConfigEntry {
                    key: c"features".as_ptr(),
                    value: c"model-registry".as_ptr(),
                }];
                let mut opts = RmContextOptions::init();
                opts.entries = want.as_ptr();
                opts.entry_count = 1;
                opts.flags = RM_CONTEXT_IGNORE_ENV;
                let mut bad_ctx: *mut RmContext = ptr::NonNull::dangling().as_ptr();
                let rc = unsafe { context_create(&opts, &mut bad_ctx) };
                let message = unsafe { cstr(context_last_error(ptr::null())) }.unwrap_or_default();
                ensure!(
                    rc == RM_E_FEATURE_UNAVAILABLE && bad_ctx.is_null(),
                    "rc {rc}, context {bad_ctx:p} (want {RM_E_FEATURE_UNAVAILABLE}, NULL)"
                );
                ensure!(
                    message.contains("model-registry"),
                    "context_last_error(NULL) = \"{message}\""
                );
                Ok(format!("\"{message}\""))
            })(),
        );
    }
    let features_value = if registry_built {
        c"model-registry"
    } else {
        c"all"
    };
    let entries = [
        RmConfigEntry {
            key: c"features".as_ptr(),
            value: features_value.as_ptr(),
        },
        RmConfigEntry {
            key: c"registry.ttl_s".as_ptr(),
            value: c"5".as_ptr(),
        },
    ];
    let mut options = RmContextOptions::init();
    options.entries = entries.as_ptr();
    options.entry_count = entries.len() as u64;
    options.flags = RM_CONTEXT_IGNORE_ENV;

    let mut ctx: *mut RmContext = ptr::null_mut();
    let ok = c.record(
        &format!(
            "context_create(features={}, registry.ttl_s=5)",
            features_value.to_string_lossy()
        ),
        (|| {
            let rc = unsafe { context_create(&options, &mut ctx) };
            ensure!(
                rc == RM_OK && !ctx.is_null(),
                "rc {rc}: \"{}\"",
                unsafe { cstr(context_last_error(ptr::null())) }.unwrap_or_default()
            );
            Ok(String::new())
        })(),
    );
    if !ok {
        return c.finish(false);
    }

    let get = move |key: &CStr, size: usize| -> (i32, String, u64) {
        let mut buf = vec![0x7f as c_char; size.max(1)];
        let mut needed: u64 = u64::MAX;
        let rc = unsafe {
            config_get(
                ctx,
                key.as_ptr(),
                buf.as_mut_ptr(),
                size as u64,
                &mut needed,
            )
        };
        (rc, array_str(&buf), needed)
    };

    c.record(
        "config_get returns effective values",
        (|| {
            let (rc, ttl, needed) = get(c"registry.ttl_s", 64);
            ensure!(rc == RM_OK && ttl == "5" && needed == 2, "registry.ttl_s: rc {rc}, \"{ttl}\", needed {needed}");
            let (rc, features, _) = get(c"features", 64);
            // With "all" the accepted form of the effective value is not
            // pinned down by the header ("all" or the list), so only check
            // the exact text for the explicit list.
            ensure!(
                rc == RM_OK && (!registry_built || features == "model-registry"),
                "features: rc {rc}, \"{features}\""
            );
            let (rc, level, _) = get(c"log.level", 64);
            ensure!(rc == RM_OK && level == "warn", "log.level default: rc {rc}, \"{level}\"");
            let mut tiny = [0x7f as c_char; 1];
            let mut needed = 0u64;
            let rc = unsafe { config_get(ctx, c"registry.ttl_s".as_ptr(), tiny.as_mut_ptr(), 1, &mut needed) };
            ensure!(
                rc == RM_E_BUFFER_TOO_SMALL && needed == 2 && tiny[0] == 0x7f,
                "1-byte buffer: rc {rc}, needed {needed}, buffer[0] {:#x} (want {RM_E_BUFFER_TOO_SMALL}, 2, untouched)",
                tiny[0]
            );
            Ok(format!("registry.ttl_s=\"{ttl}\", features=\"{features}\", log.level=\"{level}\"; BUFFER_TOO_SMALL ok"))
        })(),
    );

    let want_enabled = if registry_built {
        RM_FEATURE_MODEL_REGISTRY
    } else {
        vt.features_built
    };
    c.record(
        &format!("context_info: negotiated 1.0, features_enabled = {want_enabled:#x}"),
        (|| {
            let mut info = RmContextInfo::init();
            let rc = unsafe { context_info(ctx, &mut info) };
            ensure!(rc == RM_OK, "rc {rc}");
            ensure!(
                info.struct_size as usize == size_of::<RmContextInfo>(),
                "struct_size became {}",
                info.struct_size
            );
            ensure!(
                info.negotiated_abi_version == abi::rm_abi_version(1, 0),
                "negotiated {}",
                ver(info.negotiated_abi_version)
            );
            ensure!(
                info.features_enabled == want_enabled,
                "features_enabled {:#x}, want {want_enabled:#x}",
                info.features_enabled
            );
            ensure!(
                info.features_built == vt.features_built,
                "features_built {:#x} vs vtable {:#x}",
                info.features_built,
                vt.features_built
            );
            ensure!(
                info.reserved0 == 0 && info.reserved1 == 0,
                "reserved fields {} {}",
                info.reserved0,
                info.reserved1
            );
            Ok(format!(
                "features_built {:#x}, enabled {:#x}, allocator \"{}\", arena {:#x}",
                info.features_built,
                info.features_enabled,
                array_str(&info.allocator),
                info.allocator_arena
            ))
        })(),
    );

    c.record(
        "config_get(\"no.such.key\") -> RM_E_CONFIG_UNKNOWN_KEY",
        (|| {
            let (rc, _, _) = get(c"no.such.key", 64);
            let message = unsafe { cstr(context_last_error(ctx)) }.unwrap_or_default();
            ensure!(
                rc == RM_E_CONFIG_UNKNOWN_KEY,
                "rc {rc} (want {RM_E_CONFIG_UNKNOWN_KEY})"
            );
            ensure!(
                message.contains("no.such.key"),
                "context_last_error(ctx) = \"{message}\""
            );
            Ok(format!("\"{message}\""))
        })(),
    );

    let log_lines_before = log_snapshot().len();
    c.record(
        "context_create(no.such.key=1) -> RM_E_CONFIG_UNKNOWN_KEY",
        (|| {
            let bad = [RmConfigEntry {
                key: c"no.such.key".as_ptr(),
                value: c"1".as_ptr(),
            }];
            let mut opts = RmContextOptions::init();
            opts.entries = bad.as_ptr();
            opts.entry_count = 1;
            opts.flags = RM_CONTEXT_IGNORE_ENV;
            let mut bad_ctx: *mut RmContext = ptr::NonNull::dangling().as_ptr();
            let rc = unsafe { context_create(&opts, &mut bad_ctx) };
            let message = unsafe { cstr(context_last_error(ptr::null())) }.unwrap_or_default();
            ensure!(
                rc == RM_E_CONFIG_UNKNOWN_KEY,
                "rc {rc} (want {RM_E_CONFIG_UNKNOWN_KEY}), \"{message}\""
            );
            ensure!(bad_ctx.is_null(), "*out_context not set to NULL");
            ensure!(
                message.contains("no.such.key"),
                "context_last_error(NULL) = \"{message}\""
            );
            Ok(format!("\"{message}\""))
        })(),
    );

    c.record(
        "log sink received the failure, with the services' user pointer",
        (|| {
            let lines = log_snapshot();
            let new = &lines[log_lines_before.min(lines.len())..];
            let bad_user = SERVICES_BAD_USER.load(Ordering::SeqCst);
            ensure!(
                bad_user == 0,
                "{bad_user} callbacks got the wrong user pointer"
            );
            let hit = new.iter().find(|(_, l)| l.contains("no.such.key"));
            ensure!(
                hit.is_some(),
                "no logged line mentions no.such.key ({} lines since: {:?})",
                new.len(),
                new
            );
            let (level, line) = hit.unwrap();
            Ok(format!("[{}] \"{}\"", level_name(*level), line))
        })(),
    );

    // -- 5. the model registry ----------------------------------------------
    let get_model = move |key: &CStr,
                          loader: Option<RmModelLoaderFn>|
          -> (i32, *mut RmModelHandle, *mut c_void) {
        let mut handle: *mut RmModelHandle = ptr::NonNull::dangling().as_ptr();
        let mut model: *mut c_void = ptr::NonNull::<u8>::dangling().as_ptr() as *mut c_void;
        let rc = unsafe {
            model_get_or_load(
                ctx,
                key.as_ptr(),
                loader,
                loader_user(),
                &mut handle,
                &mut model,
            )
        };
        (rc, handle, model)
    };
    let metrics = move || -> Result<RmRegistryMetrics, String> {
        let mut m = RmRegistryMetrics::init();
        let rc = unsafe { registry_metrics(ctx, &mut m) };
        ensure!(rc == RM_OK, "registry_metrics rc {rc}");
        Ok(m)
    };

    if !registry_built {
        c.record(
            "registry calls -> RM_E_FEATURE_UNAVAILABLE (not built)",
            (|| {
                let (rc, h, m) = get_model(c"tiny@CPU", Some(vec_loader));
                ensure!(
                    rc == RM_E_FEATURE_UNAVAILABLE,
                    "model_get_or_load rc {rc} (want {RM_E_FEATURE_UNAVAILABLE})"
                );
                ensure!(h.is_null() && m.is_null(), "outputs not set to NULL");
                ensure!(LOADER_CALLS.load(Ordering::SeqCst) == 0, "loader ran");
                // The header lists only RM_E_FEATURE_DISABLED for these
                // three; accept either "not enabled" code.
                let off = |rc: i32| rc == RM_E_FEATURE_UNAVAILABLE || rc == RM_E_FEATURE_DISABLED;
                let mut m = RmRegistryMetrics::init();
                let rc = unsafe { registry_metrics(ctx, &mut m) };
                ensure!(off(rc), "registry_metrics rc {rc}");
                let rc_metrics = rc;
                let rc = unsafe { model_evict(ctx, c"tiny@cpu".as_ptr()) };
                ensure!(off(rc), "model_evict rc {rc}");
                let mut rows = [RmModelInfo::init(); 1];
                let mut count = 0u32;
                let rc = unsafe {
                    registry_list(ctx, rows.as_mut_ptr(), size_of::<RmModelInfo>() as u32, 1, &mut count)
                };
                ensure!(off(rc), "registry_list rc {rc}");
                Ok(format!(
                    "model_get_or_load {RM_E_FEATURE_UNAVAILABLE}, registry_metrics {rc_metrics}, model_evict/registry_list {rc}"
                ))
            })(),
        );
    }

    let mut handle1: *mut RmModelHandle = ptr::null_mut();
    let mut model1: *mut c_void = ptr::null_mut();
    let registry_ok = registry_built
        && c.record(
            "model_get_or_load(\"tiny@CPU\") runs the loader once",
            (|| {
                let (rc, h, m) = get_model(c"tiny@CPU", Some(vec_loader));
                ensure!(
                    rc == RM_OK,
                    "rc {rc}: \"{}\"",
                    unsafe { cstr(context_last_error(ctx)) }.unwrap_or_default()
                );
                ensure!(!h.is_null() && !m.is_null(), "handle {h:p}, model {m:p}");
                handle1 = h;
                model1 = m;
                let calls = LOADER_CALLS.load(Ordering::SeqCst);
                let keys = LOADER_KEYS
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                ensure!(
                    calls == 1 && LOADER_BAD.load(Ordering::SeqCst) == 0,
                    "loader calls {calls}, bad {}",
                    LOADER_BAD.load(Ordering::SeqCst)
                );
                ensure!(
                    keys == ["tiny@cpu"],
                    "loader saw keys {keys:?}, want [\"tiny@cpu\"]"
                );
                // SAFETY: the model pointer is the Box<Vec<u8>> from vec_loader.
                let len = unsafe { (*(m as *const Vec<u8>)).len() };
                ensure!(len == MODEL_BYTES, "model has {len} bytes");
                Ok(format!("model {m:p}, loader saw \"tiny@cpu\""))
            })(),
        );

    if registry_ok {
        let mut handle2: *mut RmModelHandle = ptr::null_mut();
        c.record(
            "model_get_or_load(\"tiny@cpu\") is a hit: same model, no loader call",
            (|| {
                let (rc, h, m) = get_model(c"tiny@cpu", Some(vec_loader));
                ensure!(rc == RM_OK && !h.is_null(), "rc {rc}, handle {h:p}");
                handle2 = h;
                ensure!(m == model1, "model {m:p}, first get gave {model1:p}");
                let calls = LOADER_CALLS.load(Ordering::SeqCst);
                ensure!(calls == 1, "loader called {calls} times");
                Ok(String::new())
            })(),
        );

        c.record(
            "registry_metrics: hits 1, misses 1, loads 1, one model",
            (|| {
                let m = metrics()?;
                ensure!(
                    m.struct_size as usize == size_of::<RmRegistryMetrics>(),
                    "struct_size became {}",
                    m.struct_size
                );
                ensure!(
                    m.hits == 1 && m.misses == 1,
                    "hits {}, misses {}",
                    m.hits,
                    m.misses
                );
                ensure!(
                    m.loads == 1 && m.load_failures == 0,
                    "loads {}, load_failures {}",
                    m.loads,
                    m.load_failures
                );
                ensure!(
                    m.models == 1 && m.bytes == MODEL_BYTES as u64,
                    "models {}, bytes {}",
                    m.models,
                    m.bytes
                );
                ensure!(m.evictions == 0, "evictions {}", m.evictions);
                let rate_ok = (m.hit_rate - 0.5).abs() < 1e-9;
                ensure!(rate_ok, "hit_rate {}", m.hit_rate);
                Ok(format!("hit_rate {}", m.hit_rate))
            })(),
        );

        c.record(
            "registry_list: one row \"tiny@cpu\", refcount 2, host clock",
            (|| {
                let mut rows = [RmModelInfo::init(); 4];
                let mut count: u32 = u32::MAX;
                let rc = unsafe {
                    registry_list(
                        ctx,
                        rows.as_mut_ptr(),
                        size_of::<RmModelInfo>() as u32,
                        rows.len() as u32,
                        &mut count,
                    )
                };
                ensure!(rc == RM_OK && count == 1, "rc {rc}, count {count}");
                let row = &rows[0];
                let key = array_str(&row.key);
                let device = array_str(&row.device);
                ensure!(
                    key == "tiny@cpu" && device == "cpu",
                    "key \"{key}\", device \"{device}\""
                );
                ensure!(
                    row.bytes == MODEL_BYTES as u64 && row.refcount == 2,
                    "bytes {}, refcount {}",
                    row.bytes,
                    row.refcount
                );
                ensure!(
                    row.loaded_at_ns >= CLOCK_OFFSET_NS && row.last_used_ns >= row.loaded_at_ns,
                    "loaded_at_ns {}, last_used_ns {}: not from the host clock (offset {})",
                    row.loaded_at_ns,
                    row.last_used_ns,
                    CLOCK_OFFSET_NS
                );
                ensure!(rows[1].key[0] == 0, "row 1 written although count is 1");
                let mut none = [RmModelInfo::init(); 1];
                let mut count0: u32 = u32::MAX;
                let rc = unsafe {
                    registry_list(
                        ctx,
                        none.as_mut_ptr(),
                        size_of::<RmModelInfo>() as u32,
                        0,
                        &mut count0,
                    )
                };
                ensure!(
                    rc == RM_E_BUFFER_TOO_SMALL && count0 == 1,
                    "capacity 0: rc {rc}, count {count0} (want {RM_E_BUFFER_TOO_SMALL}, 1)"
                );
                Ok(format!(
                    "key \"{key}\", device \"{device}\", refcount {}",
                    row.refcount
                ))
            })(),
        );

        c.record(
            "model_evict while held -> RM_E_BUSY",
            (|| {
                let rc = unsafe { model_evict(ctx, c"tiny@cpu".as_ptr()) };
                ensure!(rc == RM_E_BUSY, "rc {rc} (want {RM_E_BUSY})");
                let destroys = DESTROYS.load(Ordering::SeqCst);
                ensure!(destroys == 0, "destroy ran {destroys} times");
                Ok(String::new())
            })(),
        );

        c.record(
            "model_release both handles",
            (|| {
                let rc1 = unsafe { model_release(ctx, handle1) };
                let rc2 = if handle2.is_null() {
                    RM_E_INVALID_ARGUMENT
                } else {
                    unsafe { model_release(ctx, handle2) }
                };
                ensure!(rc1 == RM_OK && rc2 == RM_OK, "rc {rc1}, {rc2}");
                let rc = unsafe { model_release(ctx, ptr::null_mut()) };
                ensure!(rc == RM_E_INVALID_ARGUMENT, "NULL handle: rc {rc}");
                ensure!(
                    DESTROYS.load(Ordering::SeqCst) == 0,
                    "release destroyed the model (TTL is 5 s)"
                );
                Ok(String::new())
            })(),
        );

        c.record(
            "model_evict(\"tiny@cpu\") destroys the model once",
            (|| {
                let rc = unsafe { model_evict(ctx, c"tiny@cpu".as_ptr()) };
                ensure!(
                    rc == RM_OK,
                    "rc {rc}: \"{}\"",
                    unsafe { cstr(context_last_error(ctx)) }.unwrap_or_default()
                );
                let destroys = DESTROYS.load(Ordering::SeqCst);
                ensure!(
                    destroys == 1 && DESTROY_BAD.load(Ordering::SeqCst) == 0,
                    "destroys {destroys}, bad {}",
                    DESTROY_BAD.load(Ordering::SeqCst)
                );
                let rc = unsafe { model_evict(ctx, c"tiny@cpu".as_ptr()) };
                ensure!(
                    rc == RM_E_NOT_FOUND,
                    "second evict: rc {rc} (want {RM_E_NOT_FOUND})"
                );
                let m = metrics()?;
                ensure!(
                    m.models == 0 && m.evictions == 1 && m.evictions_explicit == 1,
                    "models {}, evictions {}, explicit {}",
                    m.models,
                    m.evictions,
                    m.evictions_explicit
                );
                Ok(String::new())
            })(),
        );

        c.record(
            "a loader returning -1000 propagates -1000",
            (|| {
                let (rc, h, m) = get_model(c"broken@cpu", Some(failing_loader));
                ensure!(rc == LOADER_ERROR, "rc {rc} (want {LOADER_ERROR})");
                ensure!(
                    h.is_null() && m.is_null(),
                    "handle {h:p}, model {m:p} not set to NULL"
                );
                ensure!(
                    FAILING_LOADER_CALLS.load(Ordering::SeqCst) == 1,
                    "failing loader calls {}",
                    FAILING_LOADER_CALLS.load(Ordering::SeqCst)
                );
                let (rc, _, _) = get_model(c"broken@cpu", Some(failing_loader));
                ensure!(
                    rc == LOADER_ERROR && FAILING_LOADER_CALLS.load(Ordering::SeqCst) == 2,
                    "retry: rc {rc}, loader not run again"
                );
                let m = metrics()?;
                ensure!(
                    m.load_failures == 2 && m.models == 0,
                    "load_failures {}, models {}",
                    m.load_failures,
                    m.models
                );
                Ok(String::new())
            })(),
        );

        c.record(
            "model_get_or_load(\"bad key\") -> RM_E_INVALID_KEY",
            (|| {
                let before = LOADER_CALLS.load(Ordering::SeqCst);
                let (rc, h, m) = get_model(c"bad key", Some(vec_loader));
                ensure!(rc == RM_E_INVALID_KEY, "rc {rc} (want {RM_E_INVALID_KEY})");
                ensure!(h.is_null() && m.is_null(), "outputs not set to NULL");
                ensure!(
                    LOADER_CALLS.load(Ordering::SeqCst) == before,
                    "loader ran for a bad key"
                );
                let message = unsafe { cstr(context_last_error(ctx)) }.unwrap_or_default();
                Ok(format!("\"{message}\""))
            })(),
        );
    }

    if registry_built {
        c.record(
            "registry calls with features=none -> RM_E_FEATURE_DISABLED",
            (|| {
                let none = [RmConfigEntry {
                    key: c"features".as_ptr(),
                    value: c"none".as_ptr(),
                }];
                let mut opts = RmContextOptions::init();
                opts.entries = none.as_ptr();
                opts.entry_count = 1;
                opts.flags = RM_CONTEXT_IGNORE_ENV;
                let mut off: *mut RmContext = ptr::null_mut();
                let rc = unsafe { context_create(&opts, &mut off) };
                ensure!(rc == RM_OK && !off.is_null(), "context_create rc {rc}");
                let mut handle: *mut RmModelHandle = ptr::null_mut();
                let mut model: *mut c_void = ptr::null_mut();
                let before = LOADER_CALLS.load(Ordering::SeqCst);
                let rc_get = unsafe {
                    model_get_or_load(
                        off,
                        c"x@cpu".as_ptr(),
                        Some(vec_loader),
                        loader_user(),
                        &mut handle,
                        &mut model,
                    )
                };
                let mut m = RmRegistryMetrics::init();
                let rc_metrics = unsafe { registry_metrics(off, &mut m) };
                unsafe { context_destroy(off) };
                ensure!(
                    rc_get == RM_E_FEATURE_DISABLED,
                    "model_get_or_load rc {rc_get} (want {RM_E_FEATURE_DISABLED})"
                );
                ensure!(
                    rc_metrics == RM_E_FEATURE_DISABLED,
                    "registry_metrics rc {rc_metrics}"
                );
                ensure!(LOADER_CALLS.load(Ordering::SeqCst) == before, "loader ran");
                Ok(String::new())
            })(),
        );
    }

    // -- 6. teardown ---------------------------------------------------------
    let mut ctx_live = true;
    let mut expected_destroys = DESTROYS.load(Ordering::SeqCst);
    if registry_ok {
        c.record(
            "context_destroy destroys idle and held models once",
            (|| {
                let (rc, idle, _) = get_model(c"idle@cpu", Some(vec_loader));
                ensure!(rc == RM_OK, "load idle@cpu: rc {rc}");
                let rc = unsafe { model_release(ctx, idle) };
                ensure!(rc == RM_OK, "release idle@cpu: rc {rc}");
                let (rc, _held, _) = get_model(c"held@cpu", Some(vec_loader));
                ensure!(rc == RM_OK, "load held@cpu: rc {rc}");
                expected_destroys += 2;
                let warn_before = log_snapshot()
                    .iter()
                    .filter(|(l, _)| *l <= RM_LOG_WARN)
                    .count();
                unsafe { context_destroy(ctx) };
                ctx_live = false;
                let destroys = DESTROYS.load(Ordering::SeqCst);
                ensure!(
                    destroys == expected_destroys,
                    "destroys {destroys}, want {expected_destroys}"
                );
                ensure!(
                    DESTROY_BAD.load(Ordering::SeqCst) == 0,
                    "destroy got bad arguments"
                );
                let warn_after = log_snapshot()
                    .iter()
                    .filter(|(l, _)| *l <= RM_LOG_WARN)
                    .count();
                ensure!(
                    warn_after > warn_before,
                    "no warning logged for the handle still held"
                );
                Ok(format!("{destroys} destroys in all"))
            })(),
        );
    }
    c.record(
        "context_destroy(ctx); context_destroy(NULL) is a no-op",
        (|| {
            if ctx_live {
                unsafe { context_destroy(ctx) };
            }
            unsafe { context_destroy(ptr::null_mut()) };
            let destroys = DESTROYS.load(Ordering::SeqCst);
            ensure!(
                destroys == expected_destroys,
                "destroys {destroys}, want {expected_destroys}"
            );
            let clock_calls = CLOCK_CALLS.load(Ordering::SeqCst);
            Ok(format!("host clock called {clock_calls} times"))
        })(),
    );

    c.record(
        "dlclose",
        (|| {
            let rc = unsafe { dlclose(so) };
            ensure!(
                rc == 0,
                "rc {rc}: {}",
                unsafe { cstr(dlerror()) }.unwrap_or_default()
            );
            Ok(String::new())
        })(),
    );

    c.finish(true)
}
