//! Host services (`rm_host_services`): the log sink and clock a host lends
//! the plugin at negotiation.
//!
//! The plugin copies the services of its latest successful negotiation
//! into each context it creates, and calls them from any thread (its
//! background threads included) until that context is destroyed; the log
//! sink may run while the plugin holds a lock. The crate makes that safe:
//!
//! - **Lifetime.** The closures live in an `Arc`, held by the [`Plugin`]
//!   negotiated with them, by every [`Context`] created while they were the
//!   loaded object's services (released after `context_destroy`), and by a
//!   process-wide table while they are the loaded object's current
//!   services (until a later negotiation replaces them). So they are never
//!   freed while the plugin may call them.
//! - **Which services a context gets.** The services belong to the loaded
//!   object, not to one [`Plugin`] value (header, REF: negotiation): the
//!   crate negotiates again, with the [`Plugin`]'s own services and ABI
//!   range, before creating a context when another negotiation replaced
//!   them meanwhile, so a context always gets the services of the
//!   [`Plugin`] it is built from (none: the plugin's stderr lines).
//! - **No reentry.** A service must not call back into the plugin. While
//!   one runs, every call of this crate into the plugin (and loading one)
//!   on that thread panics instead; the panic, like any panic of a
//!   service, is caught before it reaches the plugin (the log line is then
//!   dropped).
//! - **A clock never goes back.** The plugin is given the maximum of what
//!   the clock returned so far (a panicking clock repeats the last value).
//!
//! [`Plugin`]: crate::Plugin
//! [`Context`]: crate::Context

use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::sys::{self, AbiStruct};

/// The severity of a log line (`RM_LOG_*`), most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `RM_LOG_ERROR`: a call failed, or something was lost.
    Error,
    /// `RM_LOG_WARN`: something was repaired or refused.
    Warn,
    /// `RM_LOG_INFO`: lifecycle events.
    Info,
    /// `RM_LOG_DEBUG`: detail (and any level the crate does not know).
    Debug,
}

impl LogLevel {
    /// The level for the C value (`RM_LOG_ERROR` is 0); values past
    /// `RM_LOG_DEBUG` are `Debug`, negative ones `Error`.
    pub fn from_raw(level: i32) -> LogLevel {
        match level {
            i32::MIN..=0 => LogLevel::Error,
            1 => LogLevel::Warn,
            2 => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        })
    }
}

type LogFn = dyn Fn(LogLevel, &str) + Send + Sync + 'static;
type ClockFn = dyn Fn() -> u64 + Send + Sync + 'static;

pub(crate) struct Inner {
    log: Option<Arc<LogFn>>,
    clock: Option<Arc<ClockFn>>,
    last_ns: AtomicU64,
}

// Plugin and Context stay unwind-safe with services: the closures are only
// ever called (never left half-updated by the crate), each call behind
// catch_unwind, and a closure's own shared state is the host's to guard
// (a Mutex poisons).
impl std::panic::RefUnwindSafe for Inner {}
impl std::panic::UnwindSafe for Inner {}
impl std::panic::RefUnwindSafe for HostServices {}
impl std::panic::UnwindSafe for HostServices {}

/// What a host lends the plugin at negotiation: a log sink and a clock,
/// either optional. Given to [`crate::PluginLoader::host_services`]; see
/// the module notes above for when the plugin calls them and how long they
/// are kept.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let Some(path) = rm_plugin::doctest::plugin_path() else { return Ok(()) };
/// use std::sync::{Arc, Mutex};
/// use rm_plugin::{Context, HostServices, LogLevel, PluginLoader};
///
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let sink = lines.clone();
/// let plugin = PluginLoader::new()
///     .path(&path)
///     .host_services(HostServices::new().log(move |level, line| {
///         // Any thread, maybe under the plugin's lock: record and return.
///         sink.lock().unwrap().push(format!("{level}: {line}"));
///     }))
///     .load()?;
/// let error = Context::with_config(&plugin, &[("registry.ttl_s", "soon")]).unwrap_err();
/// assert!(matches!(error, rm_plugin::Error::ConfigInvalidValue(_)));
/// assert!(lines.lock().unwrap().iter().any(|l| l.starts_with("error: ") && l.contains("registry.ttl_s")));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct HostServices {
    log: Option<Arc<LogFn>>,
    clock: Option<Arc<ClockFn>>,
}

impl fmt::Debug for HostServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostServices")
            .field("log", &self.log.is_some())
            .field("clock", &self.clock.is_some())
            .finish()
    }
}

impl HostServices {
    /// No services: the plugin logs to stderr and uses `CLOCK_MONOTONIC`.
    pub fn new() -> HostServices {
        HostServices::default()
    }

    /// The log sink: one line per call (no newline), with its level. The
    /// plugin filters by the context's `log.level` first. Called from any
    /// thread, possibly while the plugin holds a lock: it must be quick and
    /// must not call into the plugin (such a call panics, see above).
    pub fn log(mut self, sink: impl Fn(LogLevel, &str) + Send + Sync + 'static) -> HostServices {
        self.log = Some(Arc::new(sink));
        self
    }

    /// A monotonic clock in nanoseconds, for hosts that virtualise time
    /// (registry TTLs and idle times follow it). Thread-safe; never allowed
    /// to go back (the crate clamps it).
    pub fn clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> HostServices {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The shared state one negotiation lends, or `None` without services.
    pub(crate) fn into_inner(self) -> Option<Arc<Inner>> {
        if self.log.is_none() && self.clock.is_none() {
            return None;
        }
        Some(Arc::new(Inner {
            log: self.log,
            clock: self.clock,
            last_ns: AtomicU64::new(0),
        }))
    }
}

thread_local! {
    static IN_SERVICE: Cell<bool> = const { Cell::new(false) };
}

/// Whether a host service is running on this thread (drops then leak
/// rather than call into the plugin).
pub(crate) fn in_service() -> bool {
    IN_SERVICE.with(Cell::get)
}

/// Panics when called from inside a host service on this thread: the
/// header forbids calling back into the plugin from there.
pub(crate) fn forbid_reentry() {
    if in_service() {
        panic!("a host service (log sink or clock) called back into rm_plugin, which the header forbids");
    }
}

/// Marks this thread as inside a service while it lives.
struct ServiceScope;

impl ServiceScope {
    fn enter() -> ServiceScope {
        IN_SERVICE.with(|flag| flag.set(true));
        ServiceScope
    }
}

impl Drop for ServiceScope {
    fn drop(&mut self) {
        IN_SERVICE.with(|flag| flag.set(false));
    }
}

unsafe extern "C" fn log_trampoline(user: *mut c_void, level: i32, message: *const c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _scope = ServiceScope::enter();
        // SAFETY: user is the Arc<Inner> this negotiation lent; the crate
        // keeps it alive while any context created with it lives (module
        // notes), and the plugin calls only through such a context.
        let inner = unsafe { &*(user as *const Inner) };
        if let Some(log) = &inner.log {
            let line = if message.is_null() {
                std::borrow::Cow::Borrowed("")
            } else {
                // SAFETY: one NUL-terminated line, valid during the call.
                unsafe { CStr::from_ptr(message) }.to_string_lossy()
            };
            log(LogLevel::from_raw(level), &line);
        }
    }));
}

unsafe extern "C" fn clock_trampoline(user: *mut c_void) -> u64 {
    // SAFETY: as in log_trampoline.
    let inner = unsafe { &*(user as *const Inner) };
    let now = catch_unwind(AssertUnwindSafe(|| {
        let _scope = ServiceScope::enter();
        inner.clock.as_ref().map(|clock| clock())
    }));
    let last = inner.last_ns.load(Ordering::Relaxed);
    match now {
        Ok(Some(now)) => inner.last_ns.fetch_max(now, Ordering::Relaxed).max(now),
        _ => last,
    }
}

/// The `rm_host_services` struct for `inner`; valid as long as `inner`.
pub(crate) fn raw_services(inner: &Arc<Inner>) -> sys::RmHostServices {
    let mut raw = sys::RmHostServices::init();
    raw.user = Arc::as_ptr(inner) as *mut c_void;
    raw.log = inner
        .log
        .as_ref()
        .map(|_| log_trampoline as unsafe extern "C" fn(*mut c_void, i32, *const c_char));
    raw.monotonic_ns = inner
        .clock
        .as_ref()
        .map(|_| clock_trampoline as unsafe extern "C" fn(*mut c_void) -> u64);
    raw
}

/// Per loaded object (by its dlopen handle): the services of the crate's
/// latest successful negotiation with it, which the plugin points at.
/// Negotiations take it for writing; context creations for reading, so
/// that the services a context copies are the ones it keeps alive.
type Table = Vec<(usize, Option<Arc<Inner>>)>;
static CURRENT: RwLock<Table> = RwLock::new(Vec::new());

pub(crate) fn read_table() -> RwLockReadGuard<'static, Table> {
    CURRENT
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn write_table() -> RwLockWriteGuard<'static, Table> {
    CURRENT
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the object `handle` currently has the services `services`
/// (both none, or the same `Arc`); an object the crate never negotiated
/// with counts as having none.
pub(crate) fn is_current(table: &Table, handle: usize, services: &Option<Arc<Inner>>) -> bool {
    let current = table
        .iter()
        .find(|(h, _)| *h == handle)
        .and_then(|(_, s)| s.as_ref());
    match (current, services) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Records a successful negotiation with `handle`.
pub(crate) fn set_current(table: &mut Table, handle: usize, services: Option<Arc<Inner>>) {
    match table.iter_mut().find(|(h, _)| *h == handle) {
        Some(row) => row.1 = services,
        None => table.push((handle, services)),
    }
}
