//! Raw `#[repr(C)]` mirrors of `abi/rm_plugin.h` (ABI 1.4).
//!
//! Everything here is what the C header declares, under Rust names, so that
//! a host that needs something the safe API does not offer can still reach
//! the vtable through [`crate::Plugin::vtable`]. Layouts are checked at
//! compile time against the sizes and offsets gcc computes for the header
//! on LP64 targets. Field documentation lives in the header; each item
//! names its C counterpart.
#![allow(missing_docs)] // the header documents every field; see the module docs

use std::ffi::{c_char, c_void};
use std::marker::{PhantomData, PhantomPinned};

/// `RM_ABI_VERSION(major, minor)`.
pub const fn abi_version(major: u32, minor: u32) -> u32 {
    (major << 16) | (minor & 0xffff)
}

/// The ABI version this crate is written against (`RM_ABI_VERSION_CURRENT`).
pub const ABI_VERSION_CURRENT: u32 = abi_version(1, 4);
/// `RM_PLUGIN_ENTRY_POINT`.
pub const ENTRY_POINT: &std::ffi::CStr = c"rm_plugin_negotiate";
/// The plugin's file name in a plugin directory.
pub const PLUGIN_FILE_NAME: &str = "rm_plugin.so";

pub const RM_OK: i32 = 0;
pub const RM_FEATURE_MODEL_REGISTRY: u64 = 1 << 0;
pub const RM_FEATURE_SHARED_MEMORY: u64 = 1 << 1;
pub const RM_FEATURE_CUDA_IPC: u64 = 1 << 2;
pub const RM_CONTEXT_IGNORE_ENV: u64 = 1 << 0;
pub const RM_MODEL_KEY_MAX: usize = 256;
pub const RM_TENSOR_MAX_DIMS: usize = 8;
pub const RM_TENSOR_DESCRIPTOR_SIZE: usize = 200;
pub const RM_TENSOR_DESCRIPTOR_TEXT_MAX: usize = 280;
pub const RM_TENSOR_ALLOC_SHARED_ONLY: u64 = 1 << 0;
pub const RM_TENSOR_ALLOC_ZERO: u64 = 1 << 1;
pub const RM_TENSOR_ALLOC_STRIDED: u64 = 1 << 2;
pub const RM_TENSOR_WRITABLE: u64 = 1 << 0;
pub const RM_TENSOR_SHAREABLE: u64 = 1 << 1;
pub const RM_TENSOR_IMPORTED: u64 = 1 << 2;
pub const RM_TENSOR_OWNED: u64 = 1 << 3;
pub const RM_TENSOR_IMPORT_WRITABLE: u64 = 1 << 0;
pub const RM_TENSOR_WAIT_HOST: u64 = 1 << 0;
pub const RM_DLPACK_FLAG_READ_ONLY: u64 = 1 << 0;
pub const RM_MEMORY_SHM: u32 = 1;
pub const RM_MEMORY_CUDA: u32 = 2;
pub const RM_MODEL_MEMORY_HOST: u32 = 0;
pub const RM_CUDA_INFO_MAX_DEVICES: usize = 16;

/// `rm_host_services`.
#[repr(C)]
pub struct RmHostServices {
    pub struct_size: u32,
    pub abi_version: u32,
    pub user: *mut c_void,
    pub log: Option<unsafe extern "C" fn(user: *mut c_void, level: i32, message: *const c_char)>,
    pub monotonic_ns: Option<unsafe extern "C" fn(user: *mut c_void) -> u64>,
}

/// `rm_negotiate_request`.
#[repr(C)]
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

/// `rm_plugin_negotiate_fn`.
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

/// Opaque `rm_tensor`.
#[repr(C)]
pub struct RmTensor {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `rm_config_entry`.
#[repr(C)]
pub struct RmConfigEntry {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// `rm_context_options`.
#[repr(C)]
pub struct RmContextOptions {
    pub struct_size: u32,
    pub abi_version: u32,
    pub entries: *const RmConfigEntry,
    pub entry_count: u64,
    pub config_path: *const c_char,
    pub flags: u64,
    pub reserved: [u64; 4],
}

/// `rm_context_info`.
#[repr(C)]
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

/// `rm_loaded_model` (with the 1.2 buffer members and the 1.4 device
/// buffer). A plugin older than 1.4 gives a shorter struct: read a member
/// only when `struct_size` covers it ([`RmLoadedModel::has_buffer`],
/// [`RmLoadedModel::has_device_buffer`]).
#[repr(C)]
pub struct RmLoadedModel {
    pub struct_size: u32,
    pub abi_version: u32,
    pub model: *mut c_void,
    pub bytes: u64,
    pub destroy: Option<unsafe extern "C" fn(model: *mut c_void, destroy_user: *mut c_void)>,
    pub destroy_user: *mut c_void,
    pub alloc_buffer: Option<
        unsafe extern "C" fn(
            this: *mut RmLoadedModel,
            bytes: u64,
            out_buffer: *mut *mut c_void,
        ) -> i32,
    >,
    pub plugin_private: *mut c_void,
    // ---- 1.4 ----
    pub alloc_device_buffer: Option<
        unsafe extern "C" fn(
            this: *mut RmLoadedModel,
            bytes: u64,
            out_device_pointer: *mut u64,
            out_stream: *mut *mut c_void,
        ) -> i32,
    >,
}

impl RmLoadedModel {
    /// `RM_LOADED_MODEL_HAS_BUFFER(this)`: the plugin offers loader buffers
    /// (1.2).
    ///
    /// # Safety
    /// `this` points to the struct the plugin gave a loader, at least its
    /// `struct_size` bytes readable.
    pub unsafe fn has_buffer(this: *const RmLoadedModel) -> bool {
        let end = std::mem::offset_of!(RmLoadedModel, alloc_buffer) + std::mem::size_of::<usize>();
        // SAFETY: struct_size is a 1.0 field; alloc_buffer is read only when
        // struct_size says the plugin's struct holds it.
        unsafe {
            (*this).struct_size as usize >= end
                && std::ptr::addr_of!((*this).alloc_buffer).read().is_some()
        }
    }

    /// `RM_LOADED_MODEL_HAS_DEVICE_BUFFER(this)`: the plugin offers device
    /// buffers (1.4).
    ///
    /// # Safety
    /// As for [`RmLoadedModel::has_buffer`].
    pub unsafe fn has_device_buffer(this: *const RmLoadedModel) -> bool {
        let end =
            std::mem::offset_of!(RmLoadedModel, alloc_device_buffer) + std::mem::size_of::<usize>();
        // SAFETY: as in has_buffer, for alloc_device_buffer.
        unsafe {
            (*this).struct_size as usize >= end
                && std::ptr::addr_of!((*this).alloc_device_buffer)
                    .read()
                    .is_some()
        }
    }
}

/// `rm_model_loader_fn`.
pub type RmModelLoaderFn = unsafe extern "C" fn(
    loader_user: *mut c_void,
    key: *const c_char,
    out: *mut RmLoadedModel,
) -> i32;

/// `rm_model_info`.
#[repr(C)]
pub struct RmModelInfo {
    pub struct_size: u32,
    pub abi_version: u32,
    pub key: [c_char; RM_MODEL_KEY_MAX],
    pub device: [c_char; 32],
    pub bytes: u64,
    pub refcount: u64,
    pub loaded_at_ns: u64,
    pub last_used_ns: u64,
    pub scope: u32,
    pub state: u32,
    pub holders: u32,
    pub loader_pid: i32,
    pub idle_ns: u64,
    // ---- 1.4 ----
    pub memory: u32,
    pub device_ordinal: i32,
    pub device_uuid: [u8; 16],
    pub device_bytes: u64,
}

/// `rm_registry_metrics`.
#[repr(C)]
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
    pub attaches: u64,
    pub takeovers: u64,
    pub dead_references: u64,
    pub lock_recoveries: u64,
}

/// `rm_registry_reclaim_report`.
#[repr(C)]
pub struct RmRegistryReclaimReport {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dead_references: u64,
    pub loads_abandoned: u64,
    pub models_evicted: u64,
    pub segments_unlinked: u64,
    pub bytes_unlinked: u64,
}

/// `rm_dtype` (DLPack's DLDataType).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RmDtype {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

/// `rm_tensor_spec` (with the 1.3 `device`).
#[repr(C)]
pub struct RmTensorSpec {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dtype: RmDtype,
    pub ndim: u32,
    pub shape: [i64; RM_TENSOR_MAX_DIMS],
    pub strides: [i64; RM_TENSOR_MAX_DIMS],
    pub alignment: u64,
    pub session: u64,
    pub flags: u64,
    pub reserved: [u64; 4],
    pub device: [c_char; 16],
}

/// `rm_dl_device` (DLPack's DLDevice).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RmDlDevice {
    pub device_type: i32,
    pub device_id: i32,
}

/// `rm_tensor_info`.
#[repr(C)]
pub struct RmTensorInfo {
    pub struct_size: u32,
    pub abi_version: u32,
    pub data: *mut c_void,
    pub nbytes: u64,
    pub dtype: RmDtype,
    pub ndim: u32,
    pub shape: [i64; RM_TENSOR_MAX_DIMS],
    pub strides: [i64; RM_TENSOR_MAX_DIMS],
    pub session: u64,
    pub flags: u64,
    pub pool_id: u64,
    pub owner_pid: u32,
    pub reserved0: u32,
    pub device: RmDlDevice,
    pub device_uuid: [u8; 16],
}

/// `rm_tensor_pool_stats`.
#[repr(C)]
pub struct RmTensorPoolStats {
    pub struct_size: u32,
    pub abi_version: u32,
    pub pool_name: [c_char; 96],
    pub pool_id: u64,
    pub pool_bytes: u64,
    pub live_tensors: u64,
    pub live_bytes: u64,
    pub committed_bytes: u64,
    pub heap_tensors: u64,
    pub heap_bytes: u64,
    pub allocations: u64,
    pub fallbacks: u64,
    pub frees: u64,
    pub remote_releases: u64,
    pub holders: u64,
    pub dead_holders_reclaimed: u64,
    pub holds_reclaimed: u64,
    pub imports: u64,
    pub pools_mapped: u64,
    pub startup_segments_unlinked: u64,
    pub startup_bytes_unlinked: u64,
    pub cuda_tensors: u64,
    pub cuda_bytes: u64,
    pub cuda_blocks: u64,
    pub cuda_block_bytes: u64,
    pub cuda_handles_opened: u64,
    pub cuda_handles_open: u64,
    pub cuda_handle_cache_hits: u64,
    pub cuda_blocks_orphaned: u64,
}

/// `rm_reclaim_report`.
#[repr(C)]
pub struct RmReclaimReport {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dead_holders: u64,
    pub holds_dropped: u64,
    pub tensors_freed: u64,
    pub segments_unlinked: u64,
    pub bytes_unlinked: u64,
    pub cuda_handles_closed: u64,
    pub cuda_blocks_freed: u64,
}

/// `rm_shm_pool_info`.
#[repr(C)]
pub struct RmShmPoolInfo {
    pub struct_size: u32,
    pub abi_version: u32,
    pub name: [c_char; 96],
    pub pool_id: u64,
    pub owner_pid: u32,
    pub owner_alive: u32,
    pub owner_start_time: u64,
    pub pool_bytes: u64,
    pub committed_bytes: u64,
    pub live_tensors: u64,
    pub live_bytes: u64,
    pub holders: u32,
    pub readable: u32,
    pub memory: u32,
    pub device_blocks: u32,
}

/// `rm_cuda_device`.
#[repr(C)]
pub struct RmCudaDevice {
    pub ordinal: i32,
    pub reserved: u32,
    pub uuid: [u8; 16],
    pub uuid_text: [c_char; 48],
}

/// `rm_cuda_info`.
#[repr(C)]
pub struct RmCudaInfo {
    pub struct_size: u32,
    pub abi_version: u32,
    pub status: i32,
    pub driver_version: i32,
    pub device_count: u32,
    pub reserved: u32,
    pub library: [c_char; 256],
    pub message: [c_char; 512],
    pub devices: [RmCudaDevice; RM_CUDA_INFO_MAX_DEVICES],
}

/// `rm_device_released_fn`.
pub type RmDeviceReleasedFn = unsafe extern "C" fn(user: *mut c_void, device_pointer: *mut c_void);

/// `rm_dl_tensor` (DLTensor).
#[repr(C)]
pub struct RmDlTensor {
    pub data: *mut c_void,
    pub device: RmDlDevice,
    pub ndim: i32,
    pub dtype: RmDtype,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

/// `rm_dl_managed_tensor` (DLManagedTensor).
#[repr(C)]
pub struct RmDlManagedTensor {
    pub dl_tensor: RmDlTensor,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(this: *mut RmDlManagedTensor)>,
}

/// `rm_dl_pack_version`.
#[repr(C)]
pub struct RmDlPackVersion {
    pub major: u32,
    pub minor: u32,
}

/// `rm_dl_managed_tensor_versioned` (DLManagedTensorVersioned).
#[repr(C)]
pub struct RmDlManagedTensorVersioned {
    pub version: RmDlPackVersion,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(this: *mut RmDlManagedTensorVersioned)>,
    pub flags: u64,
    pub dl_tensor: RmDlTensor,
}

type Ctx = *mut RmContext;

/// The 1.0 part of `rm_plugin_v1`: the members every plugin has (a vtable
/// is at least this long, which [`crate::Plugin`] checks at load time), so a
/// reference to it is valid whatever the plugin's version.
#[repr(C)]
pub struct RmPluginV1Base {
    pub struct_size: u32,
    pub abi_version: u32,
    pub features_built: u64,
    pub name: *const c_char,
    pub version: *const c_char,
    pub error_name: Option<unsafe extern "C" fn(code: i32) -> *const c_char>,
    pub strerror: Option<unsafe extern "C" fn(code: i32) -> *const c_char>,
    pub context_create: Option<
        unsafe extern "C" fn(options: *const RmContextOptions, out_context: *mut Ctx) -> i32,
    >,
    pub context_destroy: Option<unsafe extern "C" fn(context: Ctx)>,
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
    pub model_key_normalize:
        Option<unsafe extern "C" fn(key: *const c_char, out: *mut c_char, out_size: u64) -> i32>,
    pub model_get_or_load: Option<
        unsafe extern "C" fn(
            context: Ctx,
            key: *const c_char,
            loader: Option<RmModelLoaderFn>,
            loader_user: *mut c_void,
            out_handle: *mut *mut RmModelHandle,
            out_model: *mut *mut c_void,
        ) -> i32,
    >,
    pub model_release:
        Option<unsafe extern "C" fn(context: Ctx, handle: *mut RmModelHandle) -> i32>,
    pub model_evict: Option<unsafe extern "C" fn(context: Ctx, key: *const c_char) -> i32>,
    pub registry_metrics:
        Option<unsafe extern "C" fn(context: Ctx, out: *mut RmRegistryMetrics) -> i32>,
    pub registry_list: Option<
        unsafe extern "C" fn(
            context: Ctx,
            out: *mut RmModelInfo,
            info_struct_size: u32,
            capacity: u32,
            out_count: *mut u32,
        ) -> i32,
    >,
}

/// `rm_plugin_v1`, every member through ABI 1.4. Members after the 1.0 ones
/// exist only when `struct_size` covers them: read them through
/// [`crate::Plugin`], which checks.
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
        unsafe extern "C" fn(options: *const RmContextOptions, out_context: *mut Ctx) -> i32,
    >,
    pub context_destroy: Option<unsafe extern "C" fn(context: Ctx)>,
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
    pub model_key_normalize:
        Option<unsafe extern "C" fn(key: *const c_char, out: *mut c_char, out_size: u64) -> i32>,
    pub model_get_or_load: Option<
        unsafe extern "C" fn(
            context: Ctx,
            key: *const c_char,
            loader: Option<RmModelLoaderFn>,
            loader_user: *mut c_void,
            out_handle: *mut *mut RmModelHandle,
            out_model: *mut *mut c_void,
        ) -> i32,
    >,
    pub model_release:
        Option<unsafe extern "C" fn(context: Ctx, handle: *mut RmModelHandle) -> i32>,
    pub model_evict: Option<unsafe extern "C" fn(context: Ctx, key: *const c_char) -> i32>,
    pub registry_metrics:
        Option<unsafe extern "C" fn(context: Ctx, out: *mut RmRegistryMetrics) -> i32>,
    pub registry_list: Option<
        unsafe extern "C" fn(
            context: Ctx,
            out: *mut RmModelInfo,
            info_struct_size: u32,
            capacity: u32,
            out_count: *mut u32,
        ) -> i32,
    >,
    // ---- 1.1 ----
    pub tensor_allocate: Option<
        unsafe extern "C" fn(
            context: Ctx,
            spec: *const RmTensorSpec,
            out: *mut *mut RmTensor,
        ) -> i32,
    >,
    pub tensor_info: Option<
        unsafe extern "C" fn(context: Ctx, tensor: *const RmTensor, out: *mut RmTensorInfo) -> i32,
    >,
    pub tensor_export: Option<
        unsafe extern "C" fn(
            context: Ctx,
            tensor: *const RmTensor,
            out: *mut c_void,
            out_size: u64,
        ) -> i32,
    >,
    pub tensor_export_text: Option<
        unsafe extern "C" fn(
            context: Ctx,
            tensor: *const RmTensor,
            out: *mut c_char,
            out_size: u64,
        ) -> i32,
    >,
    pub tensor_export_inline: Option<
        unsafe extern "C" fn(
            context: Ctx,
            tensor: *const RmTensor,
            out: *mut c_void,
            out_size: u64,
            out_needed: *mut u64,
        ) -> i32,
    >,
    pub tensor_import: Option<
        unsafe extern "C" fn(
            context: Ctx,
            descriptor: *const c_void,
            size: u64,
            flags: u64,
            out: *mut *mut RmTensor,
        ) -> i32,
    >,
    pub tensor_import_text: Option<
        unsafe extern "C" fn(
            context: Ctx,
            text: *const c_char,
            flags: u64,
            out: *mut *mut RmTensor,
        ) -> i32,
    >,
    pub tensor_release: Option<unsafe extern "C" fn(context: Ctx, tensor: *mut RmTensor) -> i32>,
    pub tensor_to_dlpack: Option<
        unsafe extern "C" fn(
            context: Ctx,
            tensor: *mut RmTensor,
            out: *mut *mut RmDlManagedTensor,
        ) -> i32,
    >,
    pub tensor_to_dlpack_versioned: Option<
        unsafe extern "C" fn(
            context: Ctx,
            tensor: *mut RmTensor,
            out: *mut *mut RmDlManagedTensorVersioned,
        ) -> i32,
    >,
    pub tensor_pool_stats:
        Option<unsafe extern "C" fn(context: Ctx, out: *mut RmTensorPoolStats) -> i32>,
    pub tensor_session_bytes:
        Option<unsafe extern "C" fn(context: Ctx, session: u64, out_bytes: *mut u64) -> i32>,
    pub tensor_reclaim:
        Option<unsafe extern "C" fn(context: Ctx, out: *mut RmReclaimReport) -> i32>,
    pub shm_list: Option<
        unsafe extern "C" fn(
            context: Ctx,
            out: *mut RmShmPoolInfo,
            info_struct_size: u32,
            capacity: u32,
            out_count: *mut u32,
        ) -> i32,
    >,
    // ---- 1.2 ----
    pub registry_reclaim:
        Option<unsafe extern "C" fn(context: Ctx, out: *mut RmRegistryReclaimReport) -> i32>,
    // ---- 1.3 ----
    pub tensor_wrap_device: Option<
        unsafe extern "C" fn(
            context: Ctx,
            spec: *const RmTensorSpec,
            device_pointer: *mut c_void,
            released: Option<RmDeviceReleasedFn>,
            released_user: *mut c_void,
            out: *mut *mut RmTensor,
        ) -> i32,
    >,
    pub tensor_record: Option<
        unsafe extern "C" fn(context: Ctx, tensor: *mut RmTensor, stream: *mut c_void) -> i32,
    >,
    pub tensor_wait: Option<
        unsafe extern "C" fn(
            context: Ctx,
            tensor: *mut RmTensor,
            stream: *mut c_void,
            flags: u64,
        ) -> i32,
    >,
    pub cuda_info: Option<unsafe extern "C" fn(context: Ctx, out: *mut RmCudaInfo) -> i32>,
    // ---- 1.4 ----
    pub model_to_dlpack: Option<
        unsafe extern "C" fn(
            context: Ctx,
            handle: *mut RmModelHandle,
            out: *mut *mut RmDlManagedTensorVersioned,
        ) -> i32,
    >,
}

/// `RM_STRUCT_INIT`: a versioned struct with `struct_size` and
/// `abi_version` set and every other byte zero.
///
/// # Safety
/// Implementors are `#[repr(C)]`, begin with two `u32` fields
/// (`struct_size`, `abi_version`) and are valid when all-zero (integers,
/// arrays of them, raw pointers and `Option` of function pointers only).
pub unsafe trait AbiStruct: Sized {
    /// The value `RM_STRUCT_INIT(type)` gives in C.
    fn init() -> Self {
        // SAFETY: by the trait's contract all-zero is a valid value, and the
        // first two fields are the u32s struct_size and abi_version.
        unsafe {
            let mut value: Self = std::mem::zeroed();
            let head = &mut value as *mut Self as *mut u32;
            *head = std::mem::size_of::<Self>() as u32;
            *head.add(1) = ABI_VERSION_CURRENT;
            value
        }
    }
}

macro_rules! abi_structs {
    ($($t:ty),*) => {$(
        // SAFETY: #[repr(C)], starts with struct_size and abi_version, and
        // holds only integers, arrays, raw pointers and optional fn pointers.
        unsafe impl AbiStruct for $t {}
    )*};
}
abi_structs!(
    RmHostServices,
    RmNegotiateRequest,
    RmContextOptions,
    RmContextInfo,
    RmModelInfo,
    RmRegistryMetrics,
    RmRegistryReclaimReport,
    RmTensorSpec,
    RmTensorInfo,
    RmTensorPoolStats,
    RmReclaimReport,
    RmShmPoolInfo,
    RmCudaInfo
);

// Sizes and offsets as gcc lays out abi/rm_plugin.h on LP64 (x86_64,
// aarch64): a mismatch is a build error, not a corrupted call.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<RmHostServices>() == 32);
    assert!(size_of::<RmNegotiateRequest>() == 72);
    assert!(size_of::<RmContextOptions>() == 72);
    assert!(size_of::<RmContextInfo>() == 136);
    assert!(size_of::<RmLoadedModel>() == 64);
    assert!(offset_of!(RmLoadedModel, alloc_buffer) == 40);
    assert!(offset_of!(RmLoadedModel, alloc_device_buffer) == 56);
    assert!(size_of::<RmModelInfo>() == 384);
    assert!(offset_of!(RmModelInfo, scope) == 328);
    assert!(offset_of!(RmModelInfo, memory) == 352);
    assert!(offset_of!(RmModelInfo, device_ordinal) == 356);
    assert!(offset_of!(RmModelInfo, device_uuid) == 360);
    assert!(offset_of!(RmModelInfo, device_bytes) == 376);
    assert!(size_of::<RmRegistryMetrics>() == 136);
    assert!(offset_of!(RmRegistryMetrics, attaches) == 104);
    assert!(size_of::<RmRegistryReclaimReport>() == 48);
    assert!(size_of::<RmDtype>() == 4);
    assert!(size_of::<RmTensorSpec>() == 216);
    assert!(offset_of!(RmTensorSpec, device) == 200);
    assert!(size_of::<RmTensorInfo>() == 216);
    assert!(offset_of!(RmTensorInfo, device) == 192);
    assert!(size_of::<RmTensorPoolStats>() == 312);
    assert!(offset_of!(RmTensorPoolStats, cuda_tensors) == 248);
    assert!(size_of::<RmReclaimReport>() == 64);
    assert!(offset_of!(RmReclaimReport, cuda_handles_closed) == 48);
    assert!(size_of::<RmShmPoolInfo>() == 176);
    assert!(offset_of!(RmShmPoolInfo, memory) == 168);
    assert!(size_of::<RmCudaDevice>() == 72);
    assert!(size_of::<RmCudaInfo>() == 1944);
    assert!(size_of::<RmDlTensor>() == 48);
    assert!(size_of::<RmDlManagedTensor>() == 64);
    assert!(size_of::<RmDlManagedTensorVersioned>() == 80);
    assert!(size_of::<RmPluginV1>() == 304);
    assert!(size_of::<RmPluginV1Base>() == 144);
    assert!(offset_of!(RmPluginV1, tensor_allocate) == 144);
    assert!(offset_of!(RmPluginV1, registry_reclaim) == 256);
    assert!(offset_of!(RmPluginV1, tensor_wrap_device) == 264);
    assert!(offset_of!(RmPluginV1, model_to_dlpack) == 296);
};
