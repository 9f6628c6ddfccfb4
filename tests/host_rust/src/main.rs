//! Reference Rust host for rm_plugin, written on the `rm_plugin` crate
//! (bindings/rust) the way a host would use it: load, negotiate, and drive
//! ABI 1.0 (contexts, configuration, the process-scope registry), 1.1
//! (shared-memory tensors, descriptors, DLPack) and 1.2 (the node-scope
//! registry), with a tensor and a model handed to a second process (this
//! program run again with `peer`).
//!
//! Usage: rm_host_rust /path/to/rm_plugin.so
//! Prints one line per check; exits 0 when all pass, 1 otherwise, 2 on usage.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use rm_plugin::{
    AbiVersion, Access, Context, DType, Error, Features, Plugin, PluginLoader, TensorSpec,
};

type Check = Result<String, String>;
type CheckFn = fn(&Plugin) -> Check;

fn ensure(condition: bool, what: impl Into<String>) -> Result<(), String> {
    condition.then_some(()).ok_or_else(|| what.into())
}

fn e(error: Error) -> String {
    error.to_string()
}

/// A namespace of this run only, so that nothing is shared with other tests.
fn namespace(tag: &str) -> String {
    format!("rh{tag}-{}", std::process::id())
}

fn context(plugin: &Plugin, ns: &str, pairs: &[(&str, &str)]) -> Result<Context, String> {
    let mut builder = Context::builder(plugin)
        .ignore_env()
        .set("shm.namespace", ns)
        .set("registry.namespace", ns);
    for (k, v) in pairs {
        builder = builder.set(*k, *v);
    }
    builder.build().map_err(e)
}

/// Every code of the header's RM_ERROR_MAP has the crate's and the plugin's
/// name for it.
fn check_error_map(plugin: &Plugin) -> Check {
    let header = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../abi/rm_plugin.h"
    ))
    .map_err(|x| x.to_string())?;
    let mut codes = 0;
    for line in header
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("XX("))
    {
        let mut parts = line[3..].split(',').map(str::trim);
        let code: i32 = parts
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or(format!("bad line {line}"))?;
        let name = parts.next().ok_or(format!("bad line {line}"))?;
        ensure(
            Error::code_name(code) == Some(name),
            format!(
                "crate names {code} {:?}, header {name}",
                Error::code_name(code)
            ),
        )?;
        ensure(
            plugin.error_name(code) == name,
            format!("plugin names {code} {}", plugin.error_name(code)),
        )?;
        codes += 1;
    }
    ensure(codes >= 26, format!("only {codes} codes in the header"))?;
    Ok(format!("{codes} codes agree"))
}

fn check_v1_0(plugin: &Plugin) -> Check {
    let ns = namespace("v10");
    let ctx = context(plugin, &ns, &[("registry.max_models", "2")])?;
    ensure(
        ctx.config("registry.max_models").map_err(e)? == "2",
        "config_get",
    )?;
    ensure(
        ctx.info().map_err(e)?.negotiated_abi_version == plugin.abi_version(),
        "negotiated version",
    )?;
    let a = ctx
        .get_or_load("whisper-tiny@cpu", |l| l.provide(b"weights".to_vec()))
        .map_err(e)?;
    ensure(a.bytes().map_err(e)? == b"weights", "model bytes")?;
    let b = ctx
        .get_or_load("whisper-tiny@CPU", |_| unreachable!())
        .map_err(e)?;
    ensure(a.as_ptr() == b.as_ptr(), "a hit gives the same model")?;
    ensure(
        matches!(ctx.evict("whisper-tiny@cpu"), Err(Error::Busy(_))),
        "a held model is busy",
    )?;
    drop((a, b));
    ensure(
        ctx.models().map_err(e)?[0].refcount == 0,
        "handles released on drop",
    )?;
    // Over the model budget: the least recently used idle model goes.
    for key in ["b@cpu", "c@cpu"] {
        drop(ctx.get_or_load(key, |l| l.provide(vec![1])).map_err(e)?);
    }
    let m = ctx.registry_metrics().map_err(e)?;
    ensure(m.models == 2 && m.evictions_lru == 1, format!("LRU: {m:?}"))?;
    let bad = ctx
        .get_or_load("no-device", |_| unreachable!())
        .unwrap_err();
    ensure(
        matches!(&bad, Error::InvalidKey(d) if !d.message.is_empty()),
        e(bad),
    )?;
    let failed = ctx
        .get_or_load("x@cpu", |_| {
            Err(Error::from_code(-13, "LOADER_FAILED", "corrupt file"))
        })
        .unwrap_err();
    ensure(failed.message() == "corrupt file", e(failed))?;
    Ok(format!(
        "hits {} misses {} loads {}",
        m.hits, m.misses, m.loads
    ))
}

fn check_v1_1(plugin: &Plugin) -> Check {
    let ns = namespace("v11");
    let owner = context(plugin, &ns, &[])?;
    let reader = context(plugin, &ns, &[])?;
    let mut t = owner
        .allocate(&TensorSpec::new(DType::F32, &[80, 30]).session(42))
        .map_err(e)?;
    t.as_mut_slice::<f32>()
        .map_err(e)?
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as f32);
    let view = reader
        .import(&t.export().map_err(e)?, Access::ReadOnly)
        .map_err(e)?;
    ensure(
        view.as_slice::<f32>().map_err(e)?[2399] == 2399.0,
        "view data",
    )?;
    let dl = view.to_dlpack_versioned().map_err(e)?;
    ensure(dl.read_only() && dl.shape() == [80, 30], "DLPack view")?;
    let mut forged = t.export().map_err(e)?.as_bytes().to_vec();
    forged[60] ^= 1;
    ensure(
        matches!(
            reader.import_bytes(&forged, Access::ReadOnly),
            Err(Error::InvalidDescriptor(_))
        ),
        "forged descriptor",
    )?;
    let text = t.export_text().map_err(e)?;
    drop((dl, view, t));
    ensure(
        matches!(
            reader.import_text(&text, Access::ReadOnly),
            Err(Error::StaleDescriptor(_))
        ),
        "stale descriptor",
    )?;
    let stats = owner.pool_stats().map_err(e)?;
    ensure(
        stats.live_tensors == 0 && stats.frees == 1,
        format!("{stats:?}"),
    )?;
    Ok(format!("pool {}", stats.pool_name))
}

/// The second process: imports the tensor named on stdin, sums it, and
/// attaches to the node-scope model without loading it.
fn peer(plugin: &Plugin, ns: &str) -> Result<(), String> {
    let ctx = context(plugin, ns, &[("registry.scope", "node")])?;
    let mut text = String::new();
    std::io::stdin()
        .read_line(&mut text)
        .map_err(|x| x.to_string())?;
    let view = ctx.import_text(text.trim(), Access::ReadOnly).map_err(e)?;
    let sum: i64 = view.as_slice::<i64>().map_err(e)?.iter().sum();
    let must_attach = || Error::from_code(-13, "LOADER_FAILED", "the peer must attach, not load");
    let model = ctx
        .get_or_load("node-model@cpu", |_| Err(must_attach()))
        .map_err(e)?;
    println!(
        "{sum} {} {}",
        String::from_utf8_lossy(model.bytes().map_err(e)?),
        ctx.registry_metrics().map_err(e)?.attaches
    );
    Ok(())
}

fn check_v1_2_across_processes(plugin: &Plugin) -> Check {
    let ns = namespace("v12");
    let ctx = context(plugin, &ns, &[("registry.scope", "node")])?;
    let model = ctx
        .get_or_load("node-model@cpu", |l| {
            l.buffer(4)?.copy_from_slice(b"NODE");
            Ok(())
        })
        .map_err(e)?;
    let mut t = ctx
        .allocate(&TensorSpec::new(DType::I64, &[100]))
        .map_err(e)?;
    t.as_mut_slice::<i64>()
        .map_err(e)?
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as i64);
    let mut child = Command::new(std::env::current_exe().map_err(|x| x.to_string())?)
        .args([plugin.path().as_os_str(), "peer".as_ref(), ns.as_ref()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|x| x.to_string())?;
    writeln!(
        child.stdin.take().unwrap(),
        "{}",
        t.export_text().map_err(e)?
    )
    .map_err(|x| x.to_string())?;
    let mut answer = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut answer)
        .map_err(|x| x.to_string())?;
    ensure(
        child.wait().map_err(|x| x.to_string())?.success(),
        "the peer failed",
    )?;
    ensure(
        answer.trim() == "4950 NODE 1",
        format!("peer said {answer:?}"),
    )?;
    ensure(
        ctx.registry_metrics().map_err(e)?.loads == 1,
        "one load on the machine",
    )?;
    drop((model, t));
    ctx.evict("node-model@cpu").map_err(e)?;
    let report = ctx.reclaim_models().map_err(e)?;
    Ok(format!(
        "peer read the tensor and attached; reclaim {report:?}"
    ))
}

fn check_old_hosts(plugin: &Plugin) -> Check {
    let v10 = PluginLoader::new()
        .path(plugin.path())
        .abi_range(AbiVersion::V1_0, AbiVersion::V1_0)
        .load()
        .map_err(e)?;
    let ctx = Context::new(&v10).map_err(e)?;
    ensure(
        matches!(
            ctx.allocate(&TensorSpec::new(DType::U8, &[1])),
            Err(Error::Unsupported { .. })
        ),
        "1.1 member on 1.0",
    )?;
    let none = PluginLoader::new()
        .path(plugin.path())
        .abi_range(AbiVersion::new(2, 0), AbiVersion::new(2, 0))
        .load();
    ensure(
        matches!(none, Err(Error::IncompatibleVersion(_))),
        "major 2",
    )?;
    Ok("1.0 host: no 1.1 calls; 2.0 host: INCOMPATIBLE_VERSION".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[2] == "peer" {
        let result = Plugin::load(&args[1])
            .map_err(e)
            .and_then(|p| peer(&p, &args[3]));
        if let Err(message) = result {
            eprintln!("peer: {message}");
            std::process::exit(1);
        }
        return;
    }
    if args.len() != 2 {
        eprintln!("usage: rm_host_rust /path/to/rm_plugin.so");
        std::process::exit(2);
    }
    let plugin = match Plugin::load(&args[1]) {
        Ok(plugin) => plugin,
        Err(error) => {
            println!("FAIL load: {error}");
            std::process::exit(1);
        }
    };
    println!(
        "ok   load: {} {} ABI {} ({:?})",
        plugin.name(),
        plugin.version(),
        plugin.abi_version(),
        plugin.features_built()
    );
    let built = plugin.features_built();
    let mut checks: Vec<(&str, CheckFn)> = vec![("error map", check_error_map)];
    if built.contains(Features::MODEL_REGISTRY) {
        checks.push(("ABI 1.0 registry", check_v1_0));
    }
    if built.contains(Features::SHARED_MEMORY) {
        checks.push(("ABI 1.1 tensors", check_v1_1));
    }
    if built.contains(Features::MODEL_REGISTRY | Features::SHARED_MEMORY) {
        checks.push((
            "ABI 1.2 node scope across processes",
            check_v1_2_across_processes,
        ));
    }
    // Last: a negotiation sets the version the plugin records for contexts
    // created after it, in the whole loaded object.
    checks.push(("old hosts", check_old_hosts));
    let mut failed = 0;
    for (name, check) in checks {
        match std::panic::catch_unwind(|| check(&plugin)).unwrap_or_else(|_| Err("panicked".into()))
        {
            Ok(note) => println!("ok   {name}: {note}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!(
        "{}",
        if failed == 0 {
            "all checks passed".to_string()
        } else {
            format!("{failed} checks failed")
        }
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
