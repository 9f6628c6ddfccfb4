//! One process hands a tensor to another and both share one node-scope
//! model. Run: cargo run --example handoff [path/to/rm_plugin.so]
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use rm_plugin::{Access, Context, DType, Plugin, TensorSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let plugin = match args.next().filter(|a| a != "consumer") {
        Some(path) => Plugin::load(path)?,
        None => Plugin::discover()?,
    };
    let ns =
        std::env::var("HANDOFF_NS").unwrap_or_else(|_| format!("handoff-{}", std::process::id()));
    let ctx = Context::builder(&plugin)
        .set("shm.namespace", &ns)
        .set("registry.namespace", &ns)
        .set("registry.scope", "node")
        .build()?;
    let model = ctx.get_or_load("whisper-tiny@cpu", |load| {
        load.buffer(4)?.copy_from_slice(b"TINY"); // runs once per machine
        Ok(())
    })?;

    if std::env::args().any(|a| a == "consumer") {
        let mut text = String::new();
        std::io::stdin().read_line(&mut text)?;
        let tensor = ctx.import_text(text.trim(), Access::ReadOnly)?;
        let sum: f32 = tensor.as_slice::<f32>()?.iter().sum();
        println!("{sum} {}", String::from_utf8_lossy(model.bytes()?));
        return Ok(());
    }

    let mut tensor = ctx.allocate(&TensorSpec::new(DType::F32, &[4]))?;
    tensor
        .as_mut_slice::<f32>()?
        .copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
    let mut consumer = Command::new(std::env::current_exe()?)
        .args(std::env::args().skip(1).chain(["consumer".to_string()]))
        .env("HANDOFF_NS", &ns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    writeln!(consumer.stdin.take().unwrap(), "{}", tensor.export_text()?)?;
    let mut answer = String::new();
    BufReader::new(consumer.stdout.take().unwrap()).read_line(&mut answer)?;
    assert!(consumer.wait()?.success());
    assert_eq!(answer.trim(), "10 TINY");
    assert_eq!(ctx.registry_metrics()?.loads, 1);
    println!("consumer read {}", answer.trim());
    drop(model);
    ctx.evict("whisper-tiny@cpu")?; // else it stays registry.ttl_s for the next process
    Ok(())
}
