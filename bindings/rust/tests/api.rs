//! The public functions no other test file calls: the raw escape hatches
//! (Plugin::vtable, raw_vtable, Context::as_raw, Tensor::as_raw,
//! DlPack::into_raw, CudaStream::from_raw), PluginLoader::default and
//! TensorSpec::shared_only; and the unwind-safety of the main types.

mod common;

use std::ffi::CStr;
use std::mem::{offset_of, size_of};

use rm_plugin::sys::{self, AbiStruct};
use rm_plugin::{AbiVersion, CudaStream, DType, PluginLoader, TensorSpec};

#[test]
fn raw_vtable_members_are_checked_as_rm_plugin_has_does() {
    let plugin = plugin_or_skip!();
    let base = plugin.vtable();
    assert!(base.struct_size as usize >= size_of::<sys::RmPluginV1Base>());
    assert_eq!(
        AbiVersion::from_raw(base.abi_version),
        plugin.plugin_abi_version()
    );

    let raw = plugin.raw_vtable();
    assert!(!raw.is_null());
    assert_eq!(raw as *const sys::RmPluginV1Base, base as *const _);
    // RM_PLUGIN_HAS(vtable, tensor_info): long enough, and set.
    let end = offset_of!(sys::RmPluginV1, tensor_info) + size_of::<usize>();
    assert!(base.struct_size as usize >= end);
    // SAFETY: the vtable is at least `end` bytes long (checked above) and
    // static while `plugin` lives.
    let tensor_info = unsafe { (*raw).tensor_info }.expect("a 1.1 member");
    // SAFETY: a 1.0 member read through the raw pointer, callable with any code.
    let name = unsafe { CStr::from_ptr((*raw).error_name.unwrap()(-10)) };
    assert_eq!(name.to_str().unwrap(), plugin.error_name(-10));

    // Context::as_raw and Tensor::as_raw with a member called directly.
    let ns = common::namespace("raw");
    {
        let ctx = common::context(&plugin, &ns, &[]);
        let t = ctx.allocate(&TensorSpec::new(DType::I16, &[3, 5])).unwrap();
        assert!(!t.as_raw().is_null());
        let mut info = sys::RmTensorInfo::init();
        // SAFETY: a live context and one of its tensors, a struct made with
        // RM_STRUCT_INIT.
        let code = unsafe { tensor_info(ctx.as_raw(), t.as_raw(), &mut info) };
        assert_eq!(code, sys::RM_OK);
        assert_eq!((info.ndim, info.nbytes), (2, 30));
        assert_eq!(info.data, t.info().unwrap().data);
        assert!(std::ptr::eq(t.context(), &ctx));
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn plugin_loader_default_is_new() {
    let plugin = plugin_or_skip!();
    let loaded = PluginLoader::default().path(plugin.path()).load().unwrap();
    assert_eq!(
        loaded.abi_version(),
        PluginLoader::new()
            .path(plugin.path())
            .load()
            .unwrap()
            .abi_version()
    );
    assert_eq!(
        loaded.abi_version(),
        AbiVersion::CURRENT.min(loaded.plugin_abi_version())
    );
    assert_eq!(
        format!("{:?}", PluginLoader::default()),
        format!("{:?}", PluginLoader::new())
    );
}

#[test]
fn cuda_streams_are_names_only() {
    // SAFETY: NULL is the legacy default stream, valid for any device.
    let stream = unsafe { CudaStream::from_raw(std::ptr::null_mut()) };
    assert_eq!(stream, CudaStream::LEGACY_DEFAULT);
    assert!(stream.as_raw().is_null());
    let named = 0x1000 as *mut std::ffi::c_void;
    // SAFETY: never handed to a driver: only the name is compared.
    assert_eq!(unsafe { CudaStream::from_raw(named) }.as_raw(), named);
}

#[test]
fn shared_only_allocations_never_fall_back_to_private_memory() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("shonly");
    {
        let ctx = common::context(&plugin, &ns, &[]);
        let t = ctx
            .allocate(&TensorSpec::new(DType::U8, &[4096]).shared_only())
            .unwrap();
        assert!(t.info().unwrap().shareable);
        // Bigger than the pool (16M in common::context): no private fallback.
        let error = ctx
            .allocate(&TensorSpec::new(DType::U8, &[32 << 20]).shared_only())
            .unwrap_err();
        assert!(
            matches!(
                error,
                rm_plugin::Error::NoMemory(_) | rm_plugin::Error::QuotaExceeded(_)
            ),
            "{error}"
        );
        let stats = ctx.pool_stats().unwrap();
        assert_eq!((stats.fallbacks, stats.heap_tensors), (0, 0));
        assert_eq!(
            DType::U8.element_bytes() * 4096,
            t.as_bytes().unwrap().len()
        );
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn a_dlpack_handed_on_with_into_raw_is_deleted_by_its_consumer() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("dlraw");
    {
        let ctx = common::context(&plugin, &ns, &[]);
        let t = ctx.allocate(&TensorSpec::new(DType::F32, &[8])).unwrap();
        let managed = t.to_dlpack().unwrap().into_raw();
        drop(t);
        // The export holds its own reference.
        assert_eq!(ctx.pool_stats().unwrap().live_tensors, 1);
        // SAFETY: the plugin's managed tensor, not yet deleted; its deleter
        // runs once, here, before the context is destroyed.
        unsafe {
            assert_eq!((*managed).dl_tensor.ndim, 1);
            (*managed).deleter.unwrap()(managed);
        }
        assert_eq!(ctx.pool_stats().unwrap().live_tensors, 0);
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn the_main_types_are_unwind_safe() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    unwind_safe::<rm_plugin::Plugin>();
    unwind_safe::<rm_plugin::Context>();
    unwind_safe::<rm_plugin::PluginLoader>();
}
