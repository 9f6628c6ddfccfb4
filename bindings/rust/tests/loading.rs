//! Loading: explicit paths, discovery, negotiation, and plugins that are
//! too old (a real one negotiated down, and a shim that only knows 1.0).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rm_plugin::{AbiVersion, Context, DType, Error, Features, Plugin, PluginLoader, TensorSpec};

/// The ABI 1.0 shim plugin (tests/old_plugin/old_plugin.c), as meson built
/// it ($RM_OLD_PLUGIN_PATH) or compiled here with cc; `None` without cc.
fn old_plugin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RM_OLD_PLUGIN_PATH") {
        return Some(PathBuf::from(path));
    }
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("old_plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join("rm_plugin.so");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-std=c11", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(manifest.join("../../abi"))
        .arg(manifest.join("tests/old_plugin/old_plugin.c"))
        .status()
        .ok()?;
    if !status.success() {
        eprintln!("skipped: cc could not build the old plugin shim");
        return None;
    }
    Some(out)
}

#[test]
fn loads_negotiates_and_describes_itself() {
    let plugin = plugin_or_skip!();
    assert_eq!(plugin.name(), "rm_plugin");
    assert!(!plugin.version().is_empty());
    assert_eq!(plugin.abi_version(), AbiVersion::CURRENT);
    assert!(plugin.plugin_abi_version() >= AbiVersion::V1_3);
    assert!(plugin
        .features_built()
        .contains(Features::MODEL_REGISTRY | Features::SHARED_MEMORY));
    assert!(plugin.path().is_file());
    assert_eq!(plugin.error_name(-10), "INVALID_KEY");
    assert_eq!(plugin.error_name(12345), "UNKNOWN");
    assert_eq!(plugin.strerror(-10), "malformed model key");
    let keys = plugin.config_keys();
    for key in ["features", "shm.namespace", "registry.scope", "cuda.driver"] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
    assert!(format!("{plugin:?}").contains("abi_version"));
    // Every code the crate mirrors has the plugin's name for it.
    for code in -25..=0 {
        assert_eq!(
            Error::code_name(code),
            Some(plugin.error_name(code).as_str()),
            "code {code}"
        );
    }
}

#[test]
fn discovery_searches_the_directories_in_order() {
    let plugin = plugin_or_skip!();
    let dir = plugin.path().parent().unwrap().to_path_buf();
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-plugin-here");
    std::fs::create_dir_all(&empty).unwrap();
    let found = PluginLoader::new()
        .search_dirs([&empty, &dir])
        .load()
        .unwrap();
    assert_eq!(found.path(), dir.join("rm_plugin.so"));
    let error = PluginLoader::new()
        .search_dirs([&empty])
        .load()
        .unwrap_err();
    assert!(matches!(error, Error::Load(_)));
    assert!(error.to_string().contains("no-plugin-here"), "{error}");
    assert_eq!(error.code(), None);
    assert!(!rm_plugin::install_dirs().is_empty());
    assert!(PluginLoader::default_search_dirs().ends_with(&rm_plugin::install_dirs()));
}

#[test]
fn a_missing_or_foreign_file_is_a_load_error() {
    let error = Plugin::load("/nonexistent/rm_plugin.so").unwrap_err();
    assert!(
        matches!(&error, Error::Load(m) if m.contains("/nonexistent/rm_plugin.so")),
        "{error}"
    );
    // A real shared object without the entry point.
    let libc = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file());
    if let Some(libm) = libc {
        let error = Plugin::load(libm).unwrap_err();
        assert!(
            matches!(&error, Error::Load(m) if m.contains("rm_plugin_negotiate")),
            "{error}"
        );
    }
}

#[test]
fn a_range_the_plugin_does_not_offer_is_incompatible_version() {
    let plugin = plugin_or_skip!();
    let error = PluginLoader::new()
        .path(plugin.path())
        .abi_range(AbiVersion::new(2, 0), AbiVersion::new(2, 5))
        .load()
        .unwrap_err();
    assert!(matches!(error, Error::IncompatibleVersion(_)), "{error}");
    assert!(error.message().contains("2.0"), "{error}");
    assert!(
        error.to_string().starts_with("INCOMPATIBLE_VERSION (-2)"),
        "{error}"
    );
}

#[test]
fn members_newer_than_the_negotiated_version_are_not_called() {
    let plugin = plugin_or_skip!();
    // A host that negotiated 1.0 must not use 1.1 members even though this
    // plugin's vtable has them.
    let old = PluginLoader::new()
        .path(plugin.path())
        .abi_range(AbiVersion::V1_0, AbiVersion::V1_0)
        .load()
        .unwrap();
    assert_eq!(old.abi_version(), AbiVersion::V1_0);
    let ns = common::namespace("neg10");
    let ctx = common::context(&old, &ns, &[]);
    let error = ctx.allocate(&TensorSpec::new(DType::U8, &[4])).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Unsupported {
                member: "tensor_allocate",
                since: "1.1",
                ..
            }
        ),
        "{error}"
    );
    assert!(matches!(
        ctx.reclaim_models().unwrap_err(),
        Error::Unsupported {
            member: "registry_reclaim",
            ..
        }
    ));
    // 1.2 negotiated: registry_reclaim yes, cuda no.
    let v12 = PluginLoader::new()
        .path(plugin.path())
        .abi_range(AbiVersion::V1_0, AbiVersion::V1_2)
        .load()
        .unwrap();
    let ctx12 = common::context(&v12, &ns, &[]);
    ctx12.reclaim_models().unwrap();
    assert!(matches!(
        ctx12.cuda_info().unwrap_err(),
        Error::Unsupported {
            member: "cuda_info",
            since: "1.3",
            ..
        }
    ));
    // A device spec would be read as a host one by a 1.2 plugin: refused.
    let error = ctx12
        .allocate(&TensorSpec::new(DType::U8, &[4]).device("cuda:0"))
        .unwrap_err();
    assert!(matches!(error, Error::Unsupported { .. }), "{error}");
    drop((ctx, ctx12));
    common::assert_no_leftovers(&ns);
}

#[test]
fn a_plugin_too_old_for_a_member_gives_unsupported() {
    let Some(path) = old_plugin() else { return };
    let old = Plugin::load(&path).unwrap();
    assert_eq!(old.abi_version(), AbiVersion::V1_0);
    assert_eq!(old.plugin_abi_version(), AbiVersion::V1_0);
    assert_eq!(old.version(), "0.0.1-old");
    let ctx = Context::new(&old).unwrap();
    assert_eq!(ctx.info().unwrap().negotiated_abi_version, AbiVersion::V1_0);
    // Past the shim's struct_size lie poison bytes: a call would crash.
    let error = ctx
        .allocate(&TensorSpec::new(DType::F32, &[2]))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Unsupported {
                member: "tensor_allocate",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("0.0.1-old"), "{error}");
    assert!(matches!(
        ctx.reclaim_models().unwrap_err(),
        Error::Unsupported { since: "1.2", .. }
    ));
    assert!(matches!(
        ctx.cuda_info().unwrap_err(),
        Error::Unsupported { since: "1.3", .. }
    ));
    assert!(matches!(
        ctx.pool_stats().unwrap_err(),
        Error::Unsupported { .. }
    ));
    assert!(matches!(
        ctx.shm_list().unwrap_err(),
        Error::Unsupported { .. }
    ));
    assert!(matches!(
        ctx.import_text("rmt1.x", rm_plugin::Access::ReadOnly)
            .unwrap_err(),
        Error::Unsupported { .. }
    ));
    // Its 1.0 members still work, errors and messages included.
    assert!(ctx.models().unwrap().is_empty());
    let error = ctx.evict("a@cpu").unwrap_err();
    assert!(
        matches!(&error, Error::NotFound(d) if d.message.contains("only ABI 1.0")),
        "{error}"
    );
    // Asking it for 1.1 and later: no version in common.
    let error = PluginLoader::new()
        .path(&path)
        .abi_range(AbiVersion::V1_1, AbiVersion::CURRENT)
        .load()
        .unwrap_err();
    assert!(matches!(error, Error::IncompatibleVersion(_)), "{error}");
    // Discovery finds it like any plugin.
    let found = PluginLoader::new()
        .search_dirs([path.parent().unwrap()])
        .load()
        .unwrap();
    assert_eq!(found.version(), "0.0.1-old");
}

#[test]
fn plugin_and_context_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Plugin>();
    send_sync::<Context>();
    send_sync::<rm_plugin::ModelHandle<'static>>();
    send_sync::<rm_plugin::Tensor<'static>>();
    send_sync::<rm_plugin::DlPack<'static>>();
    send_sync::<rm_plugin::DlPackVersioned<'static>>();
    send_sync::<rm_plugin::CudaStream>();
    send_sync::<Error>();
}
