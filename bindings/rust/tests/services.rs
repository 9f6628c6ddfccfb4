//! Host services (a log sink and a clock lent at negotiation): the plugin's
//! messages reach the sink, each context gets the services of the Plugin it
//! is built from, the closures live as long as the plugin may call them,
//! and a service that calls back into the plugin is stopped.
//!
//! A binary of its own: services belong to the loaded object, so loads in
//! other test files' threads would otherwise be part of these tests.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rm_plugin::{Error, HostServices, LogLevel, Plugin, PluginLoader};

type Lines = Arc<Mutex<Vec<(LogLevel, String)>>>;

/// The tests negotiate in turn: which services are the loaded object's
/// current ones is what some of them check.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The plugin under test, loaded again with a sink that collects lines.
fn with_sink(plugin: &Plugin) -> (Plugin, Lines) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let loaded = PluginLoader::new()
        .path(plugin.path())
        .host_services(
            HostServices::new()
                .log(move |level, line| sink.lock().unwrap().push((level, line.to_string()))),
        )
        .load()
        .unwrap();
    (loaded, lines)
}

fn bad_context(plugin: &Plugin, ns: &str, value: &str) -> Error {
    common::try_context(plugin, ns, &[("registry.max_bytes", value)]).unwrap_err()
}

#[test]
fn a_failing_context_create_reaches_the_sink() {
    let _serial = serial(); // before plugin_or_skip, which negotiates
    let plugin = plugin_or_skip!();
    let (logged, lines) = with_sink(&plugin);
    let ns = common::namespace("sink");
    let error = bad_context(&logged, &ns, "lots-rust-sink");
    assert!(matches!(error, Error::ConfigInvalidValue(_)), "{error}");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|(level, line)| *level == LogLevel::Error
            && line.starts_with("context_create: ")
            && line.contains("lots-rust-sink")
            && !line.ends_with('\n')),
        "{lines:?}"
    );
    // The returned error carries the same message.
    assert!(
        lines
            .iter()
            .any(|(_, line)| line.contains(&error.message())),
        "{lines:?} / {error}"
    );
    common::assert_no_leftovers(&ns);
}

#[test]
fn each_context_gets_the_services_of_its_plugin() {
    let _serial = serial(); // before plugin_or_skip, which negotiates
    let plugin = plugin_or_skip!();
    let (first, first_lines) = with_sink(&plugin);
    let (second, second_lines) = with_sink(&plugin);
    // `plugin` (no services) was negotiated before, `second` last; each
    // context must still get its own plugin's, in any order.
    let ns = common::namespace("which");
    for (round, p) in [&first, &second, &first, &plugin, &second]
        .iter()
        .enumerate()
    {
        bad_context(p, &ns, &format!("which-{round}"));
    }
    let texts = |lines: &Lines| -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains("which-"))
            .map(|(_, l)| l.clone())
            .collect()
    };
    let first_texts = texts(&first_lines);
    let second_texts = texts(&second_lines);
    assert_eq!(first_texts.len(), 2, "{first_texts:?}");
    assert!(first_texts[0].contains("which-0") && first_texts[1].contains("which-2"));
    assert_eq!(second_texts.len(), 2, "{second_texts:?}");
    assert!(second_texts[0].contains("which-1") && second_texts[1].contains("which-4"));
    // A clone shares its plugin's services.
    let clone = first.clone();
    bad_context(&clone, &ns, "which-clone");
    assert_eq!(texts(&first_lines).len(), 3);
    // Successful creations log too, at the context's log.level.
    let ctx = common::context(&second, &ns, &[("log.level", "info")]);
    let created: Vec<_> = second_lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, line)| *level == LogLevel::Info && line.starts_with("context created"))
        .cloned()
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    drop(ctx);
    common::assert_no_leftovers(&ns);
}

/// Sets a flag when dropped: tells when the crate let go of a closure.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn the_sink_lives_while_the_plugin_may_call_it() {
    let _serial = serial(); // before plugin_or_skip, which negotiates
    let plugin = plugin_or_skip!();
    let dropped = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let ns = common::namespace("life");
    let ctx = {
        let flag = DropFlag(dropped.clone());
        let counter = count.clone();
        let logged = PluginLoader::new()
            .path(plugin.path())
            .host_services(HostServices::new().log(move |_, _| {
                let _keep = &flag;
                counter.fetch_add(1, Ordering::SeqCst);
            }))
            .load()
            .unwrap();
        common::context(&logged, &ns, &[("log.level", "debug")])
        // `logged` and the loader are gone here.
    };
    assert!(!dropped.load(Ordering::SeqCst));
    let before = count.load(Ordering::SeqCst);
    // The context still logs through the sink (its destruction, at least
    // at debug level, or the error below).
    let _ = ctx.evict("no-such-model@cpu");
    drop(ctx);
    assert!(
        !dropped.load(Ordering::SeqCst),
        "still the object's services"
    );
    assert!(count.load(Ordering::SeqCst) >= before);
    // Once a later negotiation replaced them and no context uses them, the
    // closure is freed.
    let plain = Plugin::load(plugin.path()).unwrap();
    drop(common::context(&plain, &ns, &[]));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the closure was never freed"
    );
    common::assert_no_leftovers(&ns);
}

#[test]
fn a_sink_that_calls_into_the_plugin_is_stopped() {
    let _serial = serial(); // before plugin_or_skip, which negotiates
    let plugin = plugin_or_skip!();
    let entered = Arc::new(AtomicUsize::new(0));
    let returned = Arc::new(AtomicUsize::new(0));
    let slot: Arc<Mutex<Option<Plugin>>> = Arc::default();
    let (e, r, s) = (entered.clone(), returned.clone(), slot.clone());
    let logged = PluginLoader::new()
        .path(plugin.path())
        .host_services(HostServices::new().log(move |_, _| {
            e.fetch_add(1, Ordering::SeqCst);
            let p = s.lock().unwrap().clone();
            if let Some(p) = p {
                // Forbidden: the plugin may hold a lock. The crate panics,
                // and the panic stops at the trampoline.
                let _ = p.error_name(-1);
            }
            r.fetch_add(1, Ordering::SeqCst);
        }))
        .load()
        .unwrap();
    *slot.lock().unwrap() = Some(logged.clone());
    let ns = common::namespace("reent");
    let error = bad_context(&logged, &ns, "reentry");
    assert!(matches!(error, Error::ConfigInvalidValue(_)), "{error}");
    assert!(entered.load(Ordering::SeqCst) >= 1);
    assert_eq!(returned.load(Ordering::SeqCst), 0);
    // The thread is usable afterwards: the guard is per service call.
    assert_eq!(logged.error_name(-10), "INVALID_KEY");
    slot.lock().unwrap().take();
    common::assert_no_leftovers(&ns);
}

#[test]
fn a_host_clock_times_the_registry_and_never_goes_back() {
    let _serial = serial(); // before plugin_or_skip, which negotiates
    let plugin = plugin_or_skip!();
    let now = Arc::new(AtomicU64::new(5_000_000_000));
    let clock = now.clone();
    let timed = PluginLoader::new()
        .path(plugin.path())
        .host_services(HostServices::new().clock(move || clock.load(Ordering::SeqCst)))
        .load()
        .unwrap();
    let ns = common::namespace("clock");
    {
        let ctx = common::context(&timed, &ns, &[("registry.ttl_s", "0")]);
        let load = |key: &str| ctx.get_or_load(key, |l| l.provide(vec![1u8])).unwrap();
        let a = load("clock-a@cpu");
        now.store(7_000_000_000, Ordering::SeqCst);
        let b = load("clock-b@cpu");
        now.store(1, Ordering::SeqCst); // back in time: clamped
        let c = load("clock-c@cpu");
        let rows = ctx.models().unwrap();
        let at = |key: &str| {
            rows.iter()
                .find(|r| r.key == key)
                .map(|r| r.loaded_at_ns)
                .unwrap()
        };
        assert_eq!(at("clock-a@cpu"), 5_000_000_000);
        assert_eq!(at("clock-b@cpu"), 7_000_000_000);
        assert_eq!(at("clock-c@cpu"), 7_000_000_000);
        drop((a, b, c));
    }
    common::assert_no_leftovers(&ns);
}

#[test]
fn log_levels_and_services_describe_themselves() {
    assert_eq!(LogLevel::from_raw(0), LogLevel::Error);
    assert_eq!(LogLevel::from_raw(-3), LogLevel::Error);
    assert_eq!(LogLevel::from_raw(1), LogLevel::Warn);
    assert_eq!(LogLevel::from_raw(2), LogLevel::Info);
    assert_eq!(LogLevel::from_raw(3), LogLevel::Debug);
    assert_eq!(LogLevel::from_raw(9), LogLevel::Debug);
    assert!(LogLevel::Error < LogLevel::Debug);
    assert_eq!(LogLevel::Warn.to_string(), "warn");
    let services = HostServices::new().log(|_, _| {});
    assert_eq!(
        format!("{services:?}"),
        "HostServices { log: true, clock: false }"
    );
    let loader = PluginLoader::default().host_services(services.clone().clock(|| 1));
    assert!(format!("{loader:?}").contains("clock: true"));
}
