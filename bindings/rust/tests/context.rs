//! Contexts: defaults, pairs, files, info, configuration, and their errors.

mod common;

use rm_plugin::{Context, Error, Features};

#[test]
fn defaults_pairs_and_files() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("ctx");
    let defaults = Context::builder(&plugin).ignore_env().build().unwrap();
    assert_eq!(defaults.config("registry.scope").unwrap(), "process");
    assert_eq!(defaults.config("shm.namespace").unwrap(), "default");
    drop(defaults);

    let paired =
        Context::with_config(&plugin, &[("registry.ttl_s", "7"), ("shm.namespace", &ns)]).unwrap();
    assert_eq!(paired.config("registry.ttl_s").unwrap(), "7");
    assert_eq!(paired.config("shm.namespace").unwrap(), ns);

    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{ns}.conf"));
    std::fs::write(
        &file,
        format!("# a comment\nregistry.max_models = 3\nshm.namespace = {ns}\n"),
    )
    .unwrap();
    let from_file = Context::from_file(&plugin, &file).unwrap();
    assert_eq!(from_file.config("registry.max_models").unwrap(), "3");
    // Pairs override the file.
    let both = Context::builder(&plugin)
        .file(&file)
        .set("registry.max_models", "9")
        .build()
        .unwrap();
    assert_eq!(both.config("registry.max_models").unwrap(), "9");
    std::fs::remove_file(&file).unwrap();
    drop((paired, from_file, both));
    common::assert_no_leftovers(&ns);
}

#[test]
fn info_reports_versions_features_and_allocator() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("info");
    let ctx = common::context(&plugin, &ns, &[("features", "model-registry")]);
    let info = ctx.info().unwrap();
    assert_eq!(info.negotiated_abi_version, plugin.abi_version());
    assert_eq!(info.features_built, plugin.features_built());
    assert_eq!(info.features_enabled, Features::MODEL_REGISTRY);
    assert_eq!(info.allocator_arena, None);
    let full = common::context(&plugin, &ns, &[]);
    let info = full.info().unwrap();
    assert!(info.features_enabled.contains(Features::SHARED_MEMORY));
    assert!(info.allocator.contains("jemalloc"), "{}", info.allocator);
    assert!(info.allocator_arena.is_some());
    assert!(format!("{ctx:?}").contains("Context"));
    assert_eq!(ctx.plugin().path(), plugin.path());
    assert!(!ctx.as_raw().is_null());
}

#[test]
fn configuration_errors_name_the_key_value_or_file() {
    let plugin = plugin_or_skip!();
    let error = Context::with_config(&plugin, &[("no.such.key", "1")]).unwrap_err();
    assert!(
        matches!(&error, Error::ConfigUnknownKey(d) if d.message.contains("no.such.key")),
        "{error}"
    );
    assert_eq!(error.code(), Some(-7));
    assert_eq!(error.detail().unwrap().name, "CONFIG_UNKNOWN_KEY");

    let error = Context::with_config(&plugin, &[("registry.ttl_s", "forever")]).unwrap_err();
    assert!(
        matches!(&error, Error::ConfigInvalidValue(d) if d.message.contains("forever")),
        "{error}"
    );

    let error = Context::from_file(&plugin, "/nonexistent/rm.conf").unwrap_err();
    assert!(
        matches!(&error, Error::ConfigFile(d) if d.message.contains("/nonexistent/rm.conf")),
        "{error}"
    );

    let error = Context::with_config(&plugin, &[("features", "teleportation")]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::ConfigInvalidValue(_) | Error::FeatureUnavailable(_)
        ),
        "{error}"
    );

    // A NUL byte cannot reach C: the crate refuses it.
    let error = Context::with_config(&plugin, &[("shm.namespace", "a\0b")]).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");

    let ns = common::namespace("cfg");
    let ctx = common::context(&plugin, &ns, &[]);
    let error = ctx.config("no.such.key").unwrap_err();
    assert!(matches!(error, Error::ConfigUnknownKey(_)), "{error}");
    let error = ctx.config("a\0b").unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
    // Every key has a value.
    for key in plugin.config_keys() {
        ctx.config(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

#[test]
fn error_values_format_and_convert() {
    let error = Error::from_code(-99, "SOMETHING_NEW", "from a newer plugin");
    assert!(matches!(&error, Error::Unknown { code: -99, .. }));
    assert_eq!(error.code(), Some(-99));
    assert_eq!(
        error.to_string(),
        "SOMETHING_NEW (-99): from a newer plugin"
    );
    assert_eq!(Error::from_code(-12, "BUSY", "").to_string(), "BUSY (-12)");
    assert_eq!(Error::code_name(-25), Some("DEVICE_UNAVAILABLE"));
    assert_eq!(Error::code_name(-26), None);
    let boxed: Box<dyn std::error::Error> = Box::new(Error::Load("x".into()));
    assert_eq!(boxed.to_string(), "loading rm_plugin: x");
    let unsupported = Error::Unsupported {
        member: "cuda_info",
        since: "1.3",
        plugin: "old".into(),
    };
    assert_eq!(
        unsupported.to_string(),
        "the plugin (old) has no cuda_info (ABI 1.3)"
    );
    assert_eq!(unsupported.detail(), None);
}
