//! Across real processes: the test binary runs itself again as the other
//! process (`child_role`, selected by $RM_RUST_CHILD_ROLE), and the crate's
//! README example runs as built.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use rm_plugin::{Access, CudaStream, DType, Descriptor, Device, TensorSpec, Wait};

const ROLE: &str = "RM_RUST_CHILD_ROLE";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs this test binary as the other process in `role`.
fn child(role: &str, ns: &str, extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("RM_CHILD_NS", ns);
    for (key, value) in extra {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "child {role} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn child_said(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{key}=");
    // The harness prints "test child_role ... " before the child's first line.
    stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
        .to_string()
}

/// The other process; a no-op when run as an ordinary test.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let ns = std::env::var("RM_CHILD_NS").unwrap();
    if role == "discover" {
        let plugin = rm_plugin::Plugin::discover().unwrap();
        println!("path={}", plugin.path().display());
        return;
    }
    let plugin = common::plugin().expect("the parent found a plugin");
    // Only the consumer shares models; a process that dies with a node-scope
    // context would leave its record in the table until a node-scope reclaim.
    let node: &[(&str, &str)] = if role == "consume" {
        &[("registry.scope", "node"), ("registry.ttl_s", "0")]
    } else {
        &[]
    };
    let driver_pair;
    let cuda: &[(&str, &str)] = if role == "device-consume" {
        driver_pair = [("cuda.driver", std::env::var("RM_CHILD_DRIVER").unwrap())];
        &[(driver_pair[0].0, driver_pair[0].1.as_str())]
    } else {
        node
    };
    let ctx = common::context(&plugin, &ns, cuda);
    match role.as_str() {
        "device-consume" => {
            // Exec'd, not forked: CUDA is initialised here for the first time.
            let text = std::env::var("RM_CHILD_TEXT").unwrap();
            let view = ctx.import_text(&text, Access::ReadOnly).unwrap();
            view.wait(Wait::Host).unwrap();
            let info = view.info().unwrap();
            assert_eq!(info.device, Device::Cuda(0));
            assert!(info.imported && !info.writable && !info.owned);
            assert_eq!(info.shape, [64]);
            let cuda = ctx.cuda_info().unwrap();
            assert_eq!(info.device_uuid, cuda.devices[0].uuid);
            println!("uuid={}", hex(&info.device_uuid));
            let dl = view.to_dlpack_versioned().unwrap();
            assert_eq!(dl.device(), Device::Cuda(0));
            assert!(dl.read_only());
            let dl_old = view.to_dlpack().unwrap();
            println!("dlpack={:?}/{:?}", dl.device(), dl_old.device());
            // Bytes only through the driver API, and only with the fake.
            if let Some(fake) = std::env::var_os("FAKE_CUDA_LIBRARY") {
                let driver = common::driver::Driver::open(std::path::Path::new(&fake));
                let bytes = driver.download(info.data, info.nbytes as usize);
                println!("bytes={}", hex(&bytes[..8]));
                drop(driver);
            }
            drop((dl, dl_old, view));
            println!("released=1");
        }
        "consume" => {
            let descriptor =
                Descriptor::from_bytes(&unhex(&std::env::var("RM_CHILD_DESCRIPTOR").unwrap()))
                    .unwrap();
            let mut view = ctx.import(&descriptor, Access::Writable).unwrap();
            let sum: i64 = view
                .as_slice::<i32>()
                .unwrap()
                .iter()
                .map(|&v| v as i64)
                .sum();
            println!("sum={sum}");
            view.as_mut_slice::<i32>().unwrap()[0] = -1;
            let model = ctx
                .get_or_load("shared-model@cpu", |_| panic!("the parent loaded it"))
                .unwrap();
            println!("model={}", String::from_utf8_lossy(model.bytes().unwrap()));
            println!("attaches={}", ctx.registry_metrics().unwrap().attaches);
            // A model for the parent to attach to; the parent evicts it.
            let own = ctx
                .get_or_load("child-model@cpu", |l| {
                    l.buffer(5)?.copy_from_slice(b"child");
                    Ok(())
                })
                .unwrap();
            drop((own, model, view));
        }
        "die-holding" => {
            let text = std::env::var("RM_CHILD_TEXT").unwrap();
            let view = ctx.import_text(&text, Access::ReadOnly).unwrap();
            println!("first={}", view.as_slice::<i32>().unwrap()[0]);
            // Exit without releasing: the parent's reclaim must drop the hold.
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_tensor_and_a_node_model_cross_to_another_process() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("xproc");
    {
        let node = [("registry.scope", "node"), ("registry.ttl_s", "0")];
        let ctx = common::context(&plugin, &ns, &node);
        let mut t = ctx.allocate(&TensorSpec::new(DType::I32, &[1000])).unwrap();
        for (i, v) in t.as_mut_slice::<i32>().unwrap().iter_mut().enumerate() {
            *v = i as i32;
        }
        let model = ctx
            .get_or_load("shared-model@cpu", |l| {
                l.buffer(6)?.copy_from_slice(b"parent");
                Ok(())
            })
            .unwrap();
        let output = child(
            "consume",
            &ns,
            &[("RM_CHILD_DESCRIPTOR", &hex(t.export().unwrap().as_bytes()))],
        );
        assert_eq!(child_said(&output, "sum"), "499500");
        assert_eq!(child_said(&output, "model"), "parent");
        assert_eq!(child_said(&output, "attaches"), "1");
        // The child's write through its writable view is in our memory.
        assert_eq!(t.as_slice::<i32>().unwrap()[0], -1);
        // And its model is ours without a loader.
        let theirs = ctx
            .get_or_load("child-model@cpu", |_| panic!("the child loaded it"))
            .unwrap();
        assert_eq!(theirs.bytes().unwrap(), b"child");
        drop((theirs, model));
        ctx.evict_idle().unwrap();
        assert!(ctx.models().unwrap().is_empty());
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn holds_of_a_dead_importer_are_reclaimed() {
    let plugin = plugin_or_skip!();
    let ns = common::namespace("dead");
    {
        let ctx = common::context(&plugin, &ns, &[]);
        let mut t = ctx.allocate(&TensorSpec::new(DType::I32, &[4])).unwrap();
        t.as_mut_slice::<i32>()
            .unwrap()
            .copy_from_slice(&[42, 0, 0, 0]);
        let output = child(
            "die-holding",
            &ns,
            &[("RM_CHILD_TEXT", &t.export_text().unwrap())],
        );
        assert_eq!(child_said(&output, "first"), "42");
        assert_eq!(ctx.pool_stats().unwrap().holders, 1);
        drop(t);
        let report = ctx.reclaim_tensors().unwrap();
        assert_eq!(
            (
                report.dead_holders,
                report.holds_dropped,
                report.tensors_freed
            ),
            (1, 1, 1),
            "{report:?}"
        );
        assert_eq!(ctx.pool_stats().unwrap().live_tensors, 0);
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn discovery_follows_remotemedia_plugin_dir() {
    let plugin = plugin_or_skip!();
    let dir = plugin
        .path()
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let output = child(
        "discover",
        "unused",
        &[("REMOTEMEDIA_PLUGIN_DIR", &format!("/nonexistent:{dir}"))],
    );
    assert_eq!(PathBuf::from(child_said(&output, "path")), plugin.path());
}

#[test]
fn the_readme_example_runs() {
    let plugin = plugin_or_skip!();
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("handoff");
    if !example.is_file() {
        eprintln!(
            "skipped: {} not built (cargo test builds examples)",
            example.display()
        );
        return;
    }
    let ns = common::namespace("example");
    let output = Command::new(&example)
        .arg(plugin.path())
        .env("HANDOFF_NS", &ns)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "consumer read 10 TINY"
    );
    common::assert_no_leftovers(&ns);
    // The README shows the example as it is.
    let readme = include_str!("../README.md");
    let source = include_str!("../examples/handoff.rs");
    assert!(
        readme.contains(source),
        "README.md's example differs from examples/handoff.rs"
    );
    assert!(source.lines().count() < 60);
    assert!(!source.contains("unsafe"));
}

#[test]
fn a_device_tensor_crosses_to_another_process() {
    let plugin = plugin_or_skip!();
    let Some(fake) = common::fake_cuda() else {
        eprintln!("skipped: no fake CUDA driver (build tests/fake_cuda with meson)");
        return;
    };
    let driver_path = fake.to_string_lossy().into_owned();
    let ns = common::namespace("xdev");
    {
        let ctx = common::context(&plugin, &ns, &[("cuda.driver", &driver_path)]);
        assert!(ctx.cuda_info().unwrap().is_usable());
        let t = ctx
            .allocate(&TensorSpec::new(DType::U8, &[64]).device("cuda:0").zeroed())
            .unwrap();
        let info = t.info().unwrap();
        assert_eq!(info.device, Device::Cuda(0));
        let driver = std::env::var_os("FAKE_CUDA_LIBRARY")
            .map(|fake| common::driver::Driver::open(std::path::Path::new(&fake)));
        match &driver {
            Some(driver) => {
                // Write through the driver on a stream of our own, then record
                // on that stream: the consumer's wait orders after it.
                driver.upload(info.data, &[1, 2, 3, 4, 5, 6, 7, 8]);
                let stream = driver.stream();
                // SAFETY: a live stream of device 0's primary context,
                // destroyed below after its last use.
                let stream = unsafe { CudaStream::from_raw(stream) };
                t.record(stream).unwrap();
                driver.destroy_stream(stream.as_raw());
            }
            None => t.record(CudaStream::LEGACY_DEFAULT).unwrap(),
        }
        let output = child(
            "device-consume",
            &ns,
            &[
                ("RM_CHILD_TEXT", &t.export_text().unwrap()),
                ("RM_CHILD_DRIVER", &driver_path),
            ],
        );
        assert_eq!(child_said(&output, "uuid"), hex(&info.device_uuid));
        assert_eq!(child_said(&output, "dlpack"), "Cuda(0)/Cuda(0)");
        assert_eq!(child_said(&output, "released"), "1");
        if driver.is_some() {
            assert_eq!(child_said(&output, "bytes"), "0102030405060708");
        }
        let stats = ctx.pool_stats().unwrap();
        assert_eq!((stats.cuda_tensors, stats.cuda_bytes), (1, 64));
        drop(t);
        let stats = ctx.pool_stats().unwrap();
        assert_eq!((stats.cuda_tensors, stats.cuda_bytes), (0, 0), "{stats:?}");
        let report = ctx.reclaim_tensors().unwrap();
        assert_eq!(
            report.dead_holders, 0,
            "the child released before it exited"
        );
        drop(ctx);
        drop(driver);
    }
    common::assert_no_leftovers(&ns);
}
