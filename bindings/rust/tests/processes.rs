//! Across real processes: the test binary runs itself again as the other
//! process (`child_role`, selected by $RM_RUST_CHILD_ROLE), and the crate's
//! README example runs as built.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use rm_plugin::{Access, DType, Descriptor, TensorSpec};

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
    let ctx = common::context(&plugin, &ns, node);
    match role.as_str() {
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
