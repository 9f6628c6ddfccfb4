//! ABI 1.4 without a GPU: `model_to_dlpack` of host models (the view holds
//! its own reference), where rows say a model lives, device buffers asked
//! for where there are none, hosts that negotiated 1.3, and device weights
//! in both scopes against the test-only fake driver (tests/fake_cuda).

mod common;

use rm_plugin::{AbiVersion, DType, Device, Error, Features, ModelMemory, PluginLoader, Scope};

const NO_DRIVER: &str = "/nonexistent/rm-rust-test/libcuda.so.1";

fn row(ctx: &rm_plugin::Context, key: &str) -> rm_plugin::ModelInfo {
    ctx.models()
        .unwrap()
        .into_iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no row for {key}"))
}

fn assert_host_fields(row: &rm_plugin::ModelInfo, memory: ModelMemory) {
    assert_eq!(
        (
            row.memory,
            row.device_ordinal,
            row.device_uuid,
            row.device_bytes
        ),
        (memory, -1, [0u8; 16], 0),
        "{row:?}"
    );
}

#[test]
fn model_to_dlpack_of_a_host_buffer_holds_a_reference_until_dropped() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("mdl");
    let ctx = common::context(&plugin, &ns, &[]);
    let model = ctx
        .get_or_load("weights@cpu", |l| {
            l.buffer(8)?.copy_from_slice(b"weights!");
            Ok(())
        })
        .unwrap();
    let view = model.to_dlpack().unwrap();
    assert_eq!(view.version(), (1, 0));
    assert!(view.read_only(), "a sealed buffer is read-only");
    assert_eq!(view.device(), Device::Cpu);
    assert_eq!(view.dtype(), DType::U8);
    assert_eq!(view.shape(), &[8]);
    assert!(view.strides().map_or(true, |s| s == [1]));
    assert_eq!(view.data() as *const u8, model.as_ptr());
    assert_eq!(view.host_bytes(), Some(&b"weights!"[..]));
    assert_eq!(model.device_pointer().unwrap(), None);
    assert_eq!(row(&ctx, "weights@cpu").refcount, 2, "the view's reference");

    // The handle goes first: the view still holds the model.
    drop(model);
    assert_eq!(row(&ctx, "weights@cpu").refcount, 1);
    assert!(
        matches!(ctx.evict("weights@cpu").unwrap_err(), Error::Busy(_)),
        "a view's model cannot be evicted"
    );
    assert_eq!(view.host_bytes(), Some(&b"weights!"[..]));
    // Its deleter gives the reference back.
    drop(view);
    assert_eq!(row(&ctx, "weights@cpu").refcount, 0);
    ctx.evict("weights@cpu").unwrap();
    assert!(ctx.models().unwrap().is_empty());
}

#[test]
fn a_handed_on_view_is_released_by_its_consumer() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("mdlraw");
    let ctx = common::context(&plugin, &ns, &[]);
    let model = ctx
        .get_or_load("handed@cpu", |l| {
            l.buffer(3)?.copy_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
    // An address crosses to the consumer's thread.
    let raw = model.to_dlpack().unwrap().into_raw() as usize;
    drop(model);
    assert!(matches!(
        ctx.evict("handed@cpu").unwrap_err(),
        Error::Busy(_)
    ));
    // What a DLPack consumer does when it is done, on any thread.
    std::thread::scope(|s| {
        s.spawn(move || {
            let raw = raw as *mut rm_plugin::sys::RmDlManagedTensorVersioned;
            // SAFETY: the plugin's managed tensor, deleted exactly once.
            unsafe { ((*raw).deleter.expect("a deleter"))(raw) };
        });
    });
    ctx.evict("handed@cpu").unwrap();
}

#[test]
fn a_provided_model_has_no_dlpack_view_and_host_rows() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("mdlprov");
    let ctx = common::context(&plugin, &ns, &[]);
    let own = ctx
        .get_or_load("own@cpu", |l| l.provide(b"mine".to_vec()))
        .unwrap();
    let error = own.to_dlpack().unwrap_err();
    assert!(
        matches!(&error, Error::NotShareable(d) if !d.message.is_empty()),
        "{error}"
    );
    // The failed call took no reference.
    assert_eq!(row(&ctx, "own@cpu").refcount, 1);
    assert_eq!(own.bytes().unwrap(), b"mine");
    let buffered = ctx
        .get_or_load("buffered@cpu", |l| {
            l.buffer(2)?.copy_from_slice(b"hi");
            Ok(())
        })
        .unwrap();
    // Process scope: both in this process's own memory.
    for key in ["own@cpu", "buffered@cpu"] {
        let r = row(&ctx, key);
        assert_eq!(r.scope, Scope::Process);
        assert_host_fields(&r, ModelMemory::Host);
    }
    drop((own, buffered));
    ctx.evict_idle().unwrap();
}

#[test]
fn node_scope_rows_are_shared_memory_and_views_read_the_mapping() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("mdlnode");
    let node = [("registry.scope", "node"), ("registry.ttl_s", "0")];
    {
        let a = common::context(&plugin, &ns, &node);
        let b = common::context(&plugin, &ns, &node);
        let model = a
            .get_or_load("shared@cpu", |l| {
                l.buffer(4096)?[..4].copy_from_slice(b"NODE");
                Ok(())
            })
            .unwrap();
        let r = row(&b, "shared@cpu");
        assert_eq!((r.scope, r.bytes), (Scope::Node, 4096));
        assert_host_fields(&r, ModelMemory::Shm);

        let attached = b
            .get_or_load("shared@cpu", |_| unreachable!("node scope loads once"))
            .unwrap();
        let view = attached.to_dlpack().unwrap();
        assert_eq!(
            (view.device(), view.dtype(), view.shape()),
            (Device::Cpu, DType::U8, &[4096i64][..])
        );
        assert!(view.read_only());
        assert_eq!(view.data() as *const u8, attached.as_ptr());
        assert_eq!(&view.host_bytes().unwrap()[..4], b"NODE");
        drop((model, attached));
        assert!(matches!(b.evict("shared@cpu").unwrap_err(), Error::Busy(_)));
        drop(view);
        a.evict("shared@cpu").unwrap();
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn a_device_buffer_needs_a_cuda_key_and_a_driver() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("mdldev");
    let ctx = common::context(&plugin, &ns, &[("cuda.driver", NO_DRIVER)]);
    // A key whose device is not "cuda:N".
    let error = ctx
        .get_or_load("host@cpu", |l| l.device_buffer(64).map(|_| ()))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidArgument(_) | Error::FeatureUnavailable(_) | Error::FeatureDisabled(_)
        ),
        "{error}"
    );
    assert!(error.to_string().contains("alloc_device_buffer"), "{error}");
    // No driver: the device is unavailable (or CUDA IPC was not built).
    let error = ctx
        .get_or_load("gpu@cuda:0", |l| l.device_buffer(64).map(|_| ()))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::DeviceUnavailable(_) | Error::FeatureUnavailable(_)
        ),
        "{error}"
    );
    // A failed request leaves the load to the loader: a host buffer still works.
    let model = ctx
        .get_or_load("fallback@cuda:0", |l| {
            assert!(l.device_buffer(64).is_err());
            l.buffer(2)?.copy_from_slice(b"ok");
            Ok(())
        })
        .unwrap();
    assert_eq!(model.bytes().unwrap(), b"ok");
    assert_host_fields(&row(&ctx, "fallback@cuda:0"), ModelMemory::Host);
    assert_eq!(ctx.registry_metrics().unwrap().models, 1);
}

#[test]
fn a_host_that_negotiated_1_3_has_no_1_4_members() {
    let plugin = plugin_or_skip!();
    let v13 = PluginLoader::new()
        .path(plugin.path())
        .abi_range(AbiVersion::V1_0, AbiVersion::V1_3)
        .load()
        .unwrap();
    assert_eq!(v13.abi_version(), AbiVersion::V1_3);
    let ns = common::namespace("mdl13");
    let ctx = common::context(&v13, &ns, &[]);
    let model = ctx
        .get_or_load("old@cpu", |l| {
            let error = l.device_buffer(8).unwrap_err();
            assert!(
                matches!(
                    &error,
                    Error::Unsupported {
                        member: "alloc_device_buffer",
                        since: "1.4",
                        ..
                    }
                ),
                "{error}"
            );
            l.buffer(3)?.copy_from_slice(b"old");
            Ok(())
        })
        .unwrap();
    let error = model.to_dlpack().unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Unsupported {
                member: "model_to_dlpack",
                since: "1.4",
                ..
            }
        ),
        "{error}"
    );
    // Everything of 1.3 works as before.
    assert_eq!(model.bytes().unwrap(), b"old");
    assert_eq!(row(&ctx, "old@cpu").bytes, 3);
}

#[test]
fn device_weights_in_both_scopes_with_the_fake_driver() {
    let plugin = plugin_or_skip!();
    if !plugin.features_built().contains(Features::CUDA_IPC) {
        return;
    }
    let Some(fake) = common::fake_cuda() else {
        eprintln!("skipped: no fake CUDA driver (build tests/fake_cuda with meson)");
        return;
    };
    let library = fake.to_string_lossy().into_owned();
    // The primary context of device 0 current on this thread, as a loader
    // that copies with the driver API (or the CUDA runtime) has it.
    let driver = common::driver::Driver::open(&fake);
    let weights: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let ns = common::namespace("mdlgpu");
    for scope in ["process", "node"] {
        let pairs = [
            ("cuda.driver", library.as_str()),
            ("registry.scope", scope),
            ("registry.ttl_s", "0"),
        ];
        let ctx = common::context(&plugin, &ns, &pairs);
        let uuid = ctx.cuda_info().unwrap().devices[0].clone();
        let model = ctx
            .get_or_load("gpu@cuda:0", |l| {
                let buffer = l.device_buffer(weights.len())?;
                assert_eq!(buffer.bytes, weights.len());
                assert_ne!(buffer.device_pointer, 0);
                driver.upload(buffer.device_pointer as usize as *mut _, &weights);
                Ok(())
            })
            .unwrap();
        let pointer = model.device_pointer().unwrap().expect("device weights");
        assert_eq!(pointer, model.as_ptr() as u64);
        assert_eq!(model.len().unwrap(), weights.len());
        assert!(
            matches!(model.bytes().unwrap_err(), Error::InvalidArgument(_)),
            "no host slice of device memory"
        );
        assert_eq!(
            driver.download(pointer as usize as *mut _, weights.len()),
            weights
        );

        let view = model.to_dlpack().unwrap();
        assert_eq!(
            (view.device(), view.dtype(), view.shape(), view.read_only()),
            (
                Device::Cuda(0),
                DType::U8,
                &[weights.len() as i64][..],
                true
            ),
            "{scope}"
        );
        assert_eq!(view.data() as u64, pointer);
        assert_eq!(view.host_bytes(), None);

        let rows = ctx.models().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!(
            (r.memory, r.device_ordinal, r.device_uuid, r.bytes),
            (ModelMemory::Cuda, 0, uuid.uuid, weights.len() as u64),
            "{scope}: {r:?}"
        );
        assert!(r.device_bytes >= r.bytes, "{r:?}");
        if scope == "node" {
            // The table names the device by UUID.
            assert_eq!(r.key, format!("gpu@cuda:{}", uuid.uuid_text));
            assert_eq!(r.scope, Scope::Node);
            // Whole granules (2 MiB, the fake's as current GPUs').
            assert_eq!(r.device_bytes % (2 << 20), 0, "{r:?}");
            // Another context attaches without a loader; its handle finds
            // its size and place without a row under the key it asked for.
            let other = common::context(&plugin, &ns, &pairs);
            let attached = other
                .get_or_load("gpu@cuda:0", |_| unreachable!("node scope loads once"))
                .unwrap();
            let attached_pointer = attached.device_pointer().unwrap().expect("device");
            assert_eq!(attached.len().unwrap(), weights.len());
            assert_eq!(
                driver.download(attached_pointer as usize as *mut _, weights.len()),
                weights
            );
            drop(attached);
        } else {
            assert_eq!((r.key.as_str(), r.scope), ("gpu@cuda:0", Scope::Process));
            assert_eq!(r.device_bytes, weights.len() as u64, "{r:?}");
        }
        drop(model);
        assert!(matches!(
            ctx.evict("gpu@cuda:0").unwrap_err(),
            Error::Busy(_)
        ));
        drop(view);
        ctx.evict("gpu@cuda:0").unwrap();
        assert!(ctx.models().unwrap().is_empty());
    }
    drop(driver);
    common::assert_no_leftovers(&ns);
}
