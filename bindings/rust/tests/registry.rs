//! The model registry through the crate: closure loaders, handles that
//! release themselves, metrics, rows, eviction, reclaim, node scope.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use rm_plugin::{Error, ModelState, Scope};

#[test]
fn get_or_load_runs_the_loader_once_and_handles_release_on_drop() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("reg");
    let ctx = common::context(&plugin, &ns, &[]);
    let loads = AtomicUsize::new(0);
    let load = |l: &mut rm_plugin::ModelLoad<'_>| {
        loads.fetch_add(1, Ordering::SeqCst);
        assert_eq!(l.key(), "whisper-tiny@cuda:0");
        l.buffer(5)?.copy_from_slice(b"hello");
        Ok(())
    };
    let first = ctx.get_or_load("whisper-tiny@CUDA", load).unwrap();
    assert_eq!(first.key(), "whisper-tiny@cuda:0");
    assert_eq!(first.bytes().unwrap(), b"hello");
    let second = ctx
        .get_or_load("whisper-tiny@cuda:0", |_| panic!("a hit runs no loader"))
        .unwrap();
    // The length of a hit comes from the registry's row.
    assert_eq!(second.bytes().unwrap(), b"hello");
    assert_eq!(second.as_ptr(), first.as_ptr());
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let rows = ctx.models().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].key.as_str(),
            rows[0].device.as_str(),
            rows[0].bytes,
            rows[0].refcount
        ),
        ("whisper-tiny@cuda:0", "cuda:0", 5, 2)
    );
    assert_eq!(
        (rows[0].scope, rows[0].state),
        (Scope::Process, ModelState::Ready)
    );
    // A held model is busy.
    assert!(matches!(
        ctx.evict("whisper-tiny@cuda:0").unwrap_err(),
        Error::Busy(_)
    ));
    drop(first);
    assert_eq!(ctx.models().unwrap()[0].refcount, 1);
    drop(second);
    assert_eq!(ctx.models().unwrap()[0].refcount, 0);
    let m = ctx.registry_metrics().unwrap();
    assert_eq!(
        (m.hits, m.misses, m.loads, m.models, m.bytes),
        (1, 1, 1, 1, 5)
    );
    assert!((m.hit_rate - 0.5).abs() < 1e-9);
    ctx.evict("whisper-tiny@cuda").unwrap();
    assert!(matches!(
        ctx.evict("whisper-tiny@cuda").unwrap_err(),
        Error::NotFound(_)
    ));
    assert_eq!(ctx.registry_metrics().unwrap().evictions_explicit, 1);
    assert!(format!(
        "{:?}",
        ctx.get_or_load("x@cpu", |l| l.provide(vec![1])).unwrap()
    )
    .contains("x@cpu"));
    ctx.evict_idle().unwrap();
    assert!(ctx.models().unwrap().is_empty());
}

#[test]
fn a_provided_model_is_the_1_0_way_in_process_scope() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("prov");
    let ctx = common::context(&plugin, &ns, &[]);
    let model = ctx
        .get_or_load("lfm2@cpu", |l| l.provide(b"weights".to_vec()))
        .unwrap();
    assert_eq!(model.bytes().unwrap(), b"weights");
    let again = ctx.get_or_load("lfm2@cpu", |_| unreachable!()).unwrap();
    assert_eq!(again.bytes().unwrap(), b"weights");
    drop((model, again));
    // Eviction drops the Vec through the destroy callback.
    ctx.evict("lfm2@cpu").unwrap();
    // A second buffer or model in one load is refused.
    let error = ctx
        .get_or_load("twice@cpu", |l| {
            l.buffer(1)?;
            l.buffer(1).map(|_| ())
        })
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArgument(d) if d.message.contains("second")),
        "{error}"
    );
    let error = ctx.get_or_load("twice@cpu", |l| {
        l.provide(vec![1])?;
        l.provide(vec![2])
    });
    assert!(matches!(error.unwrap_err(), Error::InvalidArgument(_)));
    // A loader that gives nothing: the plugin says so.
    assert!(matches!(
        ctx.get_or_load("empty@cpu", |_| Ok(())).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert_eq!(ctx.registry_metrics().unwrap().models, 0);
}

#[test]
fn loader_errors_and_panics_reach_the_caller() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("fail");
    let ctx = common::context(&plugin, &ns, &[]);
    let own = Error::from_code(-11, "NOT_FOUND", "weights file /models/x.bin is missing");
    let error = ctx.get_or_load("x@cpu", |_| Err(own.clone())).unwrap_err();
    assert_eq!(error, own);
    // A failed load after a provide frees its bytes and leaves no entry.
    let error = ctx
        .get_or_load("x@cpu", |l| {
            l.provide(vec![0; 1024])?;
            Err(Error::from_code(-4, "NO_MEMORY", "gave up"))
        })
        .unwrap_err();
    assert!(matches!(error, Error::NoMemory(_)));
    let error = ctx
        .get_or_load("x@cpu", |_| panic!("loader bug"))
        .unwrap_err();
    assert!(matches!(error, Error::LoaderFailed(_)), "{error}");
    let m = ctx.registry_metrics().unwrap();
    assert_eq!((m.load_failures, m.models), (3, 0));
    // The next call loads again.
    assert_eq!(
        ctx.get_or_load("x@cpu", |l| l.provide(vec![9]))
            .unwrap()
            .bytes()
            .unwrap(),
        &[9]
    );
}

#[test]
fn wrong_keys_are_invalid_key_with_a_message() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("key");
    let ctx = common::context(&plugin, &ns, &[]);
    for key in ["whisper", "a@b@cpu", "bad key@cpu", "x@tpu", "@cpu"] {
        let error = ctx.get_or_load(key, |_| unreachable!()).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidKey(d) if !d.message.is_empty()),
            "{key}: {error}"
        );
        assert!(
            matches!(ctx.evict(key).unwrap_err(), Error::InvalidKey(_)),
            "{key}"
        );
        assert!(
            matches!(plugin.normalize_key(key).unwrap_err(), Error::InvalidKey(_)),
            "{key}"
        );
    }
    assert!(matches!(
        ctx.get_or_load("a\0@cpu", |_| unreachable!()).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert_eq!(plugin.normalize_key("m@cuda:007").unwrap(), "m@cuda:7");
}

#[test]
fn a_disabled_registry_is_feature_disabled() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("nofeat");
    let ctx = common::context(&plugin, &ns, &[("features", "shared-memory")]);
    let error = ctx.get_or_load("m@cpu", |_| unreachable!()).unwrap_err();
    assert!(
        matches!(&error, Error::FeatureDisabled(d) if d.name == "FEATURE_DISABLED"),
        "{error}"
    );
    assert!(matches!(
        ctx.registry_metrics().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.models().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.evict_idle().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
    assert!(matches!(
        ctx.reclaim_models().unwrap_err(),
        Error::FeatureDisabled(_)
    ));
}

#[test]
fn loaders_may_load_other_models_and_threads_share_one_load() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("nest");
    let ctx = common::context(&plugin, &ns, &[]);
    let outer = ctx
        .get_or_load("pipeline@cpu", |l| {
            let inner = ctx.get_or_load("encoder@cpu", |l| l.provide(vec![1, 2]))?;
            let len = inner.bytes()?.len();
            l.buffer(len)?.copy_from_slice(&[3, 4]);
            Ok(())
        })
        .unwrap();
    assert_eq!(outer.bytes().unwrap(), &[3, 4]);
    // A loader that asks for its own key is a cycle, not a deadlock.
    let error = ctx
        .get_or_load("cycle@cpu", |_| {
            ctx.get_or_load("cycle@cpu", |_| unreachable!()).map(|_| ())
        })
        .unwrap_err();
    assert!(matches!(error, Error::LoadCycle(_)), "{error}");

    let loads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let model = ctx
                    .get_or_load("shared@cpu", |l| {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        l.buffer(3)?.copy_from_slice(b"abc");
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(model.bytes().unwrap(), b"abc");
            });
        }
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // Handles move to other threads and release there.
    let handle = ctx.get_or_load("shared@cpu", |_| unreachable!()).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || drop(handle));
    });
    assert_eq!(
        ctx.models()
            .unwrap()
            .iter()
            .find(|r| r.key == "shared@cpu")
            .unwrap()
            .refcount,
        0
    );
}

#[test]
fn node_scope_shares_one_load_between_contexts_and_reclaims() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("node");
    let node = [("registry.scope", "node"), ("registry.ttl_s", "0")];
    {
        let a = common::context(&plugin, &ns, &node);
        let b = common::context(&plugin, &ns, &node);
        let model = a
            .get_or_load("tts@cpu", |l| {
                l.buffer(4096)?[..4].copy_from_slice(b"TTS!");
                Ok(())
            })
            .unwrap();
        let attached = b
            .get_or_load("tts@cpu", |_| unreachable!("node scope loads once"))
            .unwrap();
        assert_eq!(&attached.bytes().unwrap()[..4], b"TTS!");
        assert_eq!(attached.bytes().unwrap().len(), 4096);
        let rows = b.models().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].scope,
                rows[0].state,
                rows[0].holders,
                rows[0].refcount
            ),
            (Scope::Node, ModelState::Ready, 1, 2)
        );
        assert_eq!(b.registry_metrics().unwrap().attaches, 1);
        assert!(matches!(b.evict("tts@cpu").unwrap_err(), Error::Busy(_)));
        // The 1.0 way cannot be shared between processes.
        let error = a
            .get_or_load("private@cpu", |l| l.provide(vec![1]))
            .unwrap_err();
        assert!(matches!(error, Error::NotShareable(_)), "{error}");
        drop((model, attached));
        let report = a.reclaim_models().unwrap();
        assert_eq!(report.dead_references, 0);
        a.evict("tts@cpu").unwrap();
        assert!(a.models().unwrap().is_empty());
    }
    common::assert_no_leftovers(&ns);
}
