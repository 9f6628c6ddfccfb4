//! CUDA device tensors (ABI 1.3) without a GPU: no driver (every CPU
//! capability keeps working), a disabled feature, and the test-only fake
//! driver (tests/fake_cuda) when it is built.

mod common;

use rm_plugin::{Access, CudaStream, DType, Device, Error, Memory, TensorSpec, Wait};

const NO_DRIVER: &str = "/nonexistent/rm-rust-test/libcuda.so.1";

#[test]
fn without_a_driver_device_tensors_are_device_unavailable() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("nodrv");
    {
        let ctx = common::context(&plugin, &ns, &[("cuda.driver", NO_DRIVER)]);
        let info = ctx.cuda_info().unwrap();
        assert!(!info.is_usable());
        assert!(
            matches!(&info.status, Some(Error::DeviceUnavailable(d)) if d.message.contains(NO_DRIVER)),
            "{info:?}"
        );
        assert_eq!((info.driver_version, info.device_count), (0, 0));
        assert!(info.devices.is_empty());
        assert_eq!(info.library, NO_DRIVER);
        assert_eq!(info.to_string(), info.message);

        let error = ctx
            .allocate(&TensorSpec::new(DType::F32, &[4]).device("cuda:0"))
            .unwrap_err();
        assert!(
            matches!(&error, Error::DeviceUnavailable(d) if !d.message.is_empty()),
            "{error}"
        );
        // SAFETY: the plugin refuses before it uses the pointer.
        let error = unsafe {
            ctx.wrap_device(
                &TensorSpec::new(DType::F32, &[4]).device("cuda:0"),
                std::ptr::null_mut(),
                Some(Box::new(|_| panic!("never held"))),
            )
        }
        .unwrap_err();
        assert!(
            matches!(
                error,
                Error::DeviceUnavailable(_) | Error::InvalidArgument(_)
            ),
            "{error}"
        );

        // Host memory keeps working, and ordering a host tensor is a no-op.
        let t = ctx
            .allocate(&TensorSpec::new(DType::F32, &[4]).device("cpu"))
            .unwrap();
        t.record(CudaStream::LEGACY_DEFAULT).unwrap();
        t.wait(Wait::Host).unwrap();
        t.wait(Wait::Stream(CudaStream::LEGACY_DEFAULT)).unwrap();
        assert_eq!(t.info().unwrap().device, Device::Cpu);
        assert_eq!(ctx.pool_stats().unwrap().cuda_tensors, 0);
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn a_disabled_cuda_feature_is_feature_disabled() {
    let plugin = plugin_or_skip!();
    if !plugin
        .features_built()
        .contains(rm_plugin::Features::CUDA_IPC)
    {
        return;
    }
    let ns = common::namespace("nocuda");
    let ctx = common::context(
        &plugin,
        &ns,
        &[
            ("features", "model-registry,shared-memory"),
            ("cuda.driver", NO_DRIVER),
        ],
    );
    let error = ctx
        .allocate(&TensorSpec::new(DType::F32, &[4]).device("cuda"))
        .unwrap_err();
    assert!(matches!(error, Error::FeatureDisabled(_)), "{error}");
    // cuda_info answers whether or not the feature is enabled.
    assert!(ctx.cuda_info().unwrap().status.is_some());
}

#[test]
fn the_fake_driver_gives_device_tensors() {
    let plugin = plugin_or_skip!();
    let Some(fake) = common::fake_cuda() else {
        eprintln!("skipped: no fake CUDA driver (build tests/fake_cuda with meson)");
        return;
    };
    let ns = common::namespace("fake");
    let driver = fake.to_string_lossy().into_owned();
    {
        let owner = common::context(
            &plugin,
            &ns,
            &[
                ("cuda.driver", &driver),
                ("cuda.pool_bytes", "8M"),
                ("cuda.block_bytes", "2M"),
            ],
        );
        let reader = common::context(&plugin, &ns, &[("cuda.driver", &driver)]);
        let info = owner.cuda_info().unwrap();
        assert!(info.is_usable(), "{info:?}");
        assert!(info.driver_version > 0 && info.device_count >= 1);
        assert!(
            info.devices[0].uuid_text.starts_with("GPU-"),
            "{:?}",
            info.devices[0]
        );

        let t = owner
            .allocate(
                &TensorSpec::new(DType::F32, &[256])
                    .device("cuda:0")
                    .zeroed(),
            )
            .unwrap();
        let ti = t.info().unwrap();
        assert_eq!(ti.device, Device::Cuda(0));
        assert_eq!(ti.device_uuid, info.devices[0].uuid);
        assert!(ti.writable && ti.shareable);
        // Device memory is not host memory: no slices.
        let error = t.as_slice::<f32>().unwrap_err();
        assert!(
            matches!(&error, Error::InvalidArgument(d) if d.message.contains("Cuda")),
            "{error}"
        );
        assert!(matches!(
            t.export_inline().unwrap_err(),
            Error::InvalidArgument(_)
        ));
        t.record(CudaStream::LEGACY_DEFAULT).unwrap();

        let view = reader
            .import_text(&t.export_text().unwrap(), Access::ReadOnly)
            .unwrap();
        view.wait(Wait::Host).unwrap();
        view.wait(Wait::Stream(CudaStream::LEGACY_DEFAULT)).unwrap();
        assert!(matches!(
            view.record(CudaStream::LEGACY_DEFAULT).unwrap_err(),
            Error::InvalidArgument(_)
        ));
        let vi = view.info().unwrap();
        assert_eq!(
            (vi.device, vi.imported, vi.writable),
            (Device::Cuda(0), true, false)
        );
        let dl = view.to_dlpack_versioned().unwrap();
        assert_eq!(dl.device(), Device::Cuda(0));
        assert!(dl.read_only());

        let stats = owner.pool_stats().unwrap();
        assert_eq!(
            (stats.cuda_tensors, stats.cuda_bytes, stats.cuda_blocks),
            (1, 1024, 1)
        );
        assert_eq!(stats.cuda_block_bytes, 2 << 20);
        let tables: Vec<_> = owner
            .shm_list()
            .unwrap()
            .into_iter()
            .filter(|p| p.memory == Memory::Cuda)
            .collect();
        assert_eq!(tables.len(), 1);
        assert_eq!((tables[0].device_blocks, tables[0].live_tensors), (1, 1));
        // Past cuda.pool_bytes: no room, no fallback.
        let error = owner
            .allocate(&TensorSpec::new(DType::U8, &[16 << 20]).device("cuda:0"))
            .unwrap_err();
        assert!(matches!(error, Error::NoMemory(_)), "{error}");

        // Wrapping memory the host has: here a block the plugin allocated,
        // which came from cuMemAlloc like any host allocation.
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let wrapped_ok = {
            // SAFETY: ti.data is device memory of device 0 with 1024
            // bytes, and it outlives the wrapped tensor (t is dropped later).
            let wrapped = unsafe {
                owner.wrap_device(
                    &TensorSpec::new(DType::U8, &[512]).device("cuda:0"),
                    ti.data,
                    Some(Box::new(move |_| {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst)
                    })),
                )
            };
            match wrapped {
                Ok(wrapped) => {
                    assert_eq!(wrapped.info().unwrap().device, Device::Cuda(0));
                    drop(wrapped);
                    // The callback runs on a later call of the context, at the
                    // latest its destruction.
                    owner.reclaim_tensors().unwrap();
                    true
                }
                Err(error) => {
                    assert!(
                        matches!(error, Error::NotShareable(_) | Error::InvalidArgument(_)),
                        "{error}"
                    );
                    false
                }
            }
        };
        drop((dl, view, t));
        reader.reclaim_tensors().unwrap();
        drop(reader);
        drop(owner);
        if wrapped_ok {
            assert!(
                released.load(std::sync::atomic::Ordering::SeqCst),
                "released callback never ran"
            );
        }
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn wrap_device_shares_host_allocated_memory_and_calls_back_once() {
    let plugin = plugin_or_skip!();
    // The driver API is used only with the fake library, named explicitly.
    let Some(fake) = std::env::var_os("FAKE_CUDA_LIBRARY") else {
        eprintln!("skipped: FAKE_CUDA_LIBRARY is not set");
        return;
    };
    let fake = std::path::PathBuf::from(fake);
    let driver = common::driver::Driver::open(&fake);
    let driver_path = fake.to_string_lossy().into_owned();
    let ns = common::namespace("wrap");
    let memory = driver.alloc(4096);
    driver.upload(memory, &[9u8; 4096]);
    let released = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let owner = common::context(&plugin, &ns, &[("cuda.driver", &driver_path)]);
        let reader = common::context(&plugin, &ns, &[("cuda.driver", &driver_path)]);
        let seen = released.clone();
        let spec = TensorSpec::new(DType::F32, &[1024]).device("cuda:0");
        // SAFETY: `memory` is a cuMemAlloc allocation of device 0 with 4096
        // bytes, the span the spec describes; it stays allocated until the
        // callback runs (which records it; it is freed after the check).
        let wrapped = unsafe {
            owner.wrap_device(
                &spec,
                memory,
                Some(Box::new(move |pointer| {
                    seen.lock().unwrap().push(pointer as usize)
                })),
            )
        }
        .unwrap();
        let info = wrapped.info().unwrap();
        assert_eq!((info.device, info.data), (Device::Cuda(0), memory));
        assert_eq!(info.nbytes, 4096);
        assert!(info.owned && info.shareable);
        // Order through a stream of the host's own.
        let stream = driver.stream();
        // SAFETY: a live stream of device 0's primary context, destroyed
        // after its last use below.
        let stream = unsafe { CudaStream::from_raw(stream) };
        driver.upload(memory, &[1, 0, 0, 0]);
        wrapped.record(stream).unwrap();

        let view = reader
            .import(&wrapped.export().unwrap(), Access::ReadOnly)
            .unwrap();
        view.wait(Wait::Stream(stream)).unwrap();
        view.wait(Wait::Host).unwrap();
        let vi = view.info().unwrap();
        assert_eq!(
            (vi.device, vi.imported, vi.nbytes),
            (Device::Cuda(0), true, 4096)
        );
        assert_eq!(vi.device_uuid, info.device_uuid);
        assert_eq!(driver.download(vi.data, 4), [1, 0, 0, 0]);
        assert_eq!(driver.download(vi.data, 4096)[4..], [9u8; 4092][..]);
        let dl = view.to_dlpack().unwrap();
        assert_eq!((dl.device(), dl.shape()), (Device::Cuda(0), &[1024i64][..]));

        // Still held by the view and its DLPack export: no callback yet.
        drop(wrapped);
        owner.reclaim_tensors().unwrap();
        assert!(released.lock().unwrap().is_empty());
        drop((dl, view));
        reader.reclaim_tensors().unwrap();
        owner.reclaim_tensors().unwrap();
        driver.destroy_stream(stream.as_raw());
        drop(reader);
        drop(owner);
        // Exactly once, with the pointer wrapped, at the latest by now.
        assert_eq!(*released.lock().unwrap(), [memory as usize]);
    }
    driver.free(memory);
    common::assert_no_leftovers(&ns);
}
