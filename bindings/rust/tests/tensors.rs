//! Shared-memory tensors through the crate: allocation, typed access,
//! descriptors (binary, text, inline), DLPack, statistics, reclaim.

mod common;

use rm_plugin::{Access, DType, Descriptor, Device, Error, Memory, TensorSpec};

#[test]
fn allocate_and_access_typed_slices() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("alloc");
    {
        let ctx = common::context(&plugin, &ns, &[]);
        let mut t = ctx
            .allocate(&TensorSpec::new(DType::F32, &[2, 3]).zeroed().session(7))
            .unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0; 6]);
        t.as_mut_slice::<f32>()
            .unwrap()
            .copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let info = t.info().unwrap();
        assert_eq!(
            (info.dtype, info.shape.as_slice(), info.strides.as_slice()),
            (DType::F32, &[2i64, 3][..], &[3i64, 1][..])
        );
        assert_eq!((info.nbytes, info.session, info.elements()), (24, 7, 6));
        assert!(info.writable && info.shareable && info.owned && !info.imported);
        assert_eq!(info.device, Device::Cpu);
        assert_eq!(info.device_uuid, [0; 16]);
        assert_eq!(info.owner_pid, std::process::id());
        assert!(info.data as usize % 64 == 0);
        assert_eq!(t.as_bytes().unwrap().len(), 24);
        t.as_bytes_mut().unwrap()[..4].copy_from_slice(&9.5f32.to_ne_bytes());
        assert_eq!(t.as_slice::<f32>().unwrap()[0], 9.5);
        // The wrong type is refused, not reinterpreted.
        let error = t.as_slice::<i32>().unwrap_err();
        assert!(
            matches!(&error, Error::InvalidArgument(d) if d.message.contains("float32")),
            "{error}"
        );
        assert!(t.as_slice::<f64>().is_err());
        for (dtype, bytes) in [
            (DType::I8, 1),
            (DType::U16, 2),
            (DType::I64, 8),
            (DType::BF16, 2),
            (DType::C128, 16),
            (DType::BOOL, 1),
        ] {
            let t = ctx.allocate(&TensorSpec::new(dtype, &[3])).unwrap();
            assert_eq!(t.info().unwrap().nbytes, 3 * bytes, "{dtype}");
        }
        let mut ints = ctx.allocate(&TensorSpec::new(DType::U64, &[4])).unwrap();
        ints.as_mut_slice::<u64>()
            .unwrap()
            .copy_from_slice(&[1, 2, 3, u64::MAX]);
        assert_eq!(ints.as_slice::<u64>().unwrap()[3], u64::MAX);
        // Scalars and empty tensors.
        let scalar = ctx.allocate(&TensorSpec::new(DType::F64, &[])).unwrap();
        assert_eq!(scalar.as_slice::<f64>().unwrap().len(), 1);
        let empty = ctx.allocate(&TensorSpec::new(DType::F64, &[0, 5])).unwrap();
        assert!(empty.as_slice::<f64>().unwrap().is_empty());
        assert!(empty.as_bytes().unwrap().is_empty());
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn strided_tensors_are_bytes_not_slices() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("stride");
    let ctx = common::context(&plugin, &ns, &[]);
    // A transposed 2x3: strides (1, 2).
    let t = ctx
        .allocate(
            &TensorSpec::new(DType::I32, &[2, 3])
                .strides(&[1, 2])
                .alignment(256),
        )
        .unwrap();
    let info = t.info().unwrap();
    assert_eq!(info.strides, vec![1, 2]);
    assert!(!info.is_contiguous());
    assert!(info.data as usize % 256 == 0);
    let error = t.as_slice::<i32>().unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArgument(d) if d.message.contains("contiguous")),
        "{error}"
    );
    assert_eq!(t.as_bytes().unwrap().len(), 24);
}

#[test]
fn bad_specs_are_invalid_argument() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("badspec");
    let ctx = common::context(&plugin, &ns, &[]);
    let cases = [
        TensorSpec::new(DType::new(2, 24, 1), &[4]), // float24
        TensorSpec::new(DType::F32, &[-1]),          // negative dimension
        TensorSpec::new(DType::F32, &[1; 9]),        // too many dimensions
        TensorSpec::new(DType::F32, &[2]).strides(&[1, 1]), // strides for other dims
        TensorSpec::new(DType::F32, &[2]).alignment(3), // not a power of two
        TensorSpec::new(DType::F32, &[2]).device("tpu:0"), // no such device kind
        TensorSpec::new(DType::F32, &[2]).device("cuda:0123456789012"), // longer than the field
    ];
    for spec in cases {
        let error = ctx.allocate(&spec).unwrap_err();
        assert!(
            matches!(error, Error::InvalidArgument(_)),
            "{spec:?}: {error}"
        );
    }
}

#[test]
fn descriptors_cross_as_bytes_and_text() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("desc");
    {
        let owner = common::context(&plugin, &ns, &[]);
        let reader = common::context(&plugin, &ns, &[]);
        let mut t = owner
            .allocate(&TensorSpec::new(DType::I16, &[4]).session(3))
            .unwrap();
        t.as_mut_slice::<i16>()
            .unwrap()
            .copy_from_slice(&[1, -2, 3, -4]);

        let descriptor = t.export().unwrap();
        assert_eq!(descriptor.as_bytes().len(), Descriptor::SIZE);
        let round_trip = Descriptor::from_bytes(descriptor.as_bytes()).unwrap();
        assert_eq!(round_trip, descriptor);
        assert!(format!("{descriptor:?}").contains("200"));
        let mut view = reader.import(&descriptor, Access::ReadOnly).unwrap();
        assert_eq!(view.as_slice::<i16>().unwrap(), &[1, -2, 3, -4]);
        let info = view.info().unwrap();
        assert!(info.imported && !info.writable && !info.owned);
        assert_eq!(info.session, 3);
        let error = view.as_mut_slice::<i16>().unwrap_err();
        assert!(
            matches!(&error, Error::InvalidArgument(d) if d.message.contains("read-only")),
            "{error}"
        );
        assert!(view.as_bytes_mut().is_err());

        let text = t.export_text().unwrap();
        assert!(text.starts_with("rmt1."), "{text}");
        let mut writer = reader.import_text(&text, Access::Writable).unwrap();
        writer.as_mut_slice::<i16>().unwrap()[0] = 100;
        // The same memory: the owner sees the write.
        assert_eq!(t.as_slice::<i16>().unwrap()[0], 100);
        assert_eq!(reader.pool_stats().unwrap().imports, 2);
        assert_eq!(owner.pool_stats().unwrap().holders, 1);

        // By value: an inline descriptor followed by the data, a private copy.
        let inline = t.export_inline().unwrap();
        assert_eq!(inline.len(), Descriptor::SIZE + 8);
        let copy = reader.import_bytes(&inline, Access::ReadOnly).unwrap();
        assert_eq!(copy.as_slice::<i16>().unwrap(), &[100, -2, 3, -4]);
        assert!(!copy.info().unwrap().shareable);
        assert!(matches!(copy.export().unwrap_err(), Error::NotShareable(_)));
        assert!(matches!(
            copy.export_text().unwrap_err(),
            Error::NotShareable(_)
        ));
        drop((view, writer, copy, t));
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn forged_damaged_and_stale_descriptors_are_refused() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("forge");
    {
        let owner = common::context(&plugin, &ns, &[]);
        let reader = common::context(&plugin, &ns, &[]);
        let t = owner.allocate(&TensorSpec::new(DType::F32, &[16])).unwrap();
        let good = t.export().unwrap();
        for index in [0usize, 8, 50, 120, 199] {
            let mut bytes = good.as_bytes().to_vec();
            bytes[index] ^= 0x5a;
            let error = reader.import_bytes(&bytes, Access::ReadOnly).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidDescriptor(d) if !d.message.is_empty()),
                "byte {index}: {error}"
            );
        }
        assert!(matches!(
            Descriptor::from_bytes(&[0; 10]).unwrap_err(),
            Error::InvalidDescriptor(_)
        ));
        assert!(matches!(
            reader.import_bytes(&[0; 10], Access::ReadOnly).unwrap_err(),
            Error::InvalidDescriptor(_)
        ));
        for text in ["rmt1.", "rmt1.AAAA", "hello", ""] {
            let error = reader.import_text(text, Access::ReadOnly).unwrap_err();
            assert!(
                matches!(error, Error::InvalidDescriptor(_)),
                "{text:?}: {error}"
            );
        }
        // Freed: the descriptor names memory that is gone.
        drop(t);
        let error = reader.import(&good, Access::ReadOnly).unwrap_err();
        assert!(matches!(error, Error::StaleDescriptor(_)), "{error}");
        // Another namespace cannot see the pool at all.
        let other_ns = common::namespace("forge2");
        let stranger = common::context(&plugin, &other_ns, &[]);
        let t = owner.allocate(&TensorSpec::new(DType::F32, &[16])).unwrap();
        let error = stranger
            .import(&t.export().unwrap(), Access::ReadOnly)
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::StaleDescriptor(_) | Error::InvalidDescriptor(_)
            ),
            "{error}"
        );
        drop((t, stranger));
        common::assert_no_leftovers(&other_ns);
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn dlpack_exports_hold_their_own_reference() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("dlpack");
    let owner = common::context(&plugin, &ns, &[]);
    let reader = common::context(&plugin, &ns, &[]);
    let mut t = owner
        .allocate(&TensorSpec::new(DType::U8, &[2, 2]))
        .unwrap();
    t.as_mut_slice::<u8>()
        .unwrap()
        .copy_from_slice(&[1, 2, 3, 4]);
    let data = t.info().unwrap().data;
    let dl = t.to_dlpack().unwrap();
    drop(t);
    assert_eq!(
        (dl.data(), dl.device(), dl.dtype(), dl.shape()),
        (data, Device::Cpu, DType::U8, &[2i64, 2][..])
    );
    assert_eq!(dl.strides(), Some(&[2i64, 1][..]));
    // SAFETY: the export keeps the 4 bytes alive until it is dropped.
    let bytes = unsafe { std::slice::from_raw_parts(dl.data() as *const u8, 4) };
    assert_eq!(bytes, &[1, 2, 3, 4]);
    // The export alone keeps a tensor importable after its handle is gone.
    let t2 = owner.allocate(&TensorSpec::new(DType::U8, &[1])).unwrap();
    let d2 = t2.export().unwrap();
    let dl2 = t2.to_dlpack().unwrap();
    drop(t2);
    let view = reader.import(&d2, Access::ReadOnly).unwrap();
    let versioned = view.to_dlpack_versioned().unwrap();
    assert_eq!(versioned.version(), (1, 0));
    assert!(versioned.read_only());
    assert_eq!(
        (versioned.device(), versioned.dtype(), versioned.shape()),
        (Device::Cpu, DType::U8, &[1i64][..])
    );
    assert!(versioned.strides().is_some());
    assert!(!versioned.data().is_null());
    // Handed to a consumer, which calls the deleter itself.
    let raw = versioned.into_raw();
    // SAFETY: the plugin's managed tensor, deleted exactly once.
    unsafe { ((*raw).deleter.unwrap())(raw) };
    drop((dl, dl2, view));
    drop(owner);
    drop(reader);
    common::assert_no_leftovers(&ns);
}

#[test]
fn pool_statistics_listing_quotas_and_reclaim() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("stats");
    {
        let ctx = common::context(&plugin, &ns, &[("shm.session_quota", "64K")]);
        assert_eq!(ctx.pool_stats().unwrap().pool_name, "");
        let a = ctx
            .allocate(&TensorSpec::new(DType::U8, &[1000]).session(1))
            .unwrap();
        let b = ctx
            .allocate(&TensorSpec::new(DType::U8, &[24]).session(2))
            .unwrap();
        let stats = ctx.pool_stats().unwrap();
        assert!(stats.pool_name.contains(&ns), "{}", stats.pool_name);
        assert_eq!(
            (
                stats.live_tensors,
                stats.live_bytes,
                stats.allocations,
                stats.pool_bytes
            ),
            (2, 1024, 2, 16 << 20)
        );
        assert_eq!((stats.cuda_tensors, stats.cuda_blocks), (0, 0));
        assert_eq!(ctx.session_bytes(1).unwrap(), 1000);
        assert_eq!(ctx.session_bytes(99).unwrap(), 0);
        let error = ctx
            .allocate(&TensorSpec::new(DType::U8, &[65 * 1024]).session(1))
            .unwrap_err();
        assert!(
            matches!(&error, Error::QuotaExceeded(d) if d.message.contains("session")),
            "{error}"
        );
        let pools = ctx.shm_list().unwrap();
        let mine = pools
            .iter()
            .find(|p| p.pool_id == stats.pool_id)
            .expect("own pool listed");
        assert!(mine.owner_alive && mine.readable);
        assert_eq!(
            (mine.owner_pid, mine.live_tensors, mine.memory),
            (std::process::id(), 2, Memory::Shm)
        );
        assert_eq!(mine.name, stats.pool_name);
        let report = ctx.reclaim_tensors().unwrap();
        assert_eq!((report.dead_holders, report.tensors_freed), (0, 0));
        drop((a, b));
        assert_eq!(ctx.pool_stats().unwrap().frees, 2);
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn disabled_shared_memory_is_feature_disabled() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("noshm");
    let ctx = common::context(&plugin, &ns, &[("features", "model-registry")]);
    let error = ctx
        .allocate(&TensorSpec::new(DType::F32, &[1]))
        .unwrap_err();
    assert!(
        matches!(&error, Error::FeatureDisabled(d) if !d.message.is_empty()),
        "{error}"
    );
    assert!(matches!(
        ctx.import_text("rmt1.x", Access::ReadOnly).unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.pool_stats().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.shm_list().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.reclaim_tensors().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.session_bytes(0).unwrap_err(),
        Error::FeatureDisabled(_)
    ));
}

#[test]
fn tensors_are_shared_across_threads() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("thr");
    let ctx = common::context(&plugin, &ns, &[]);
    let mut t = ctx.allocate(&TensorSpec::new(DType::I32, &[1024])).unwrap();
    for (i, v) in t.as_mut_slice::<i32>().unwrap().iter_mut().enumerate() {
        *v = i as i32;
    }
    let text = t.export_text().unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let view = ctx.import_text(&text, Access::ReadOnly).unwrap();
                assert_eq!(
                    view.as_slice::<i32>()
                        .unwrap()
                        .iter()
                        .map(|&v| v as i64)
                        .sum::<i64>(),
                    1023 * 1024 / 2
                );
                assert_eq!(t.as_slice::<i32>().unwrap()[10], 10);
            });
        }
    });
    let moved = ctx.import_text(&text, Access::ReadOnly).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || drop(moved));
    });
}
