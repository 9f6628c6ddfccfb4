//! Contexts: one configured instance of the plugin.

use std::ffi::{c_char, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::plugin::{AbiVersion, Features, Plugin};
use crate::sys::{self, AbiStruct};

/// One configured instance of the plugin (`rm_context`): the owner of
/// models, tensor pools and their background threads. Destroyed on `Drop`,
/// which releases everything it still holds.
///
/// `Send` and `Sync`: every member is thread-safe on one context (header,
/// REF: conventions); the one that is not, `context_destroy`, runs only in
/// `Drop`, when no [`crate::ModelHandle`], [`crate::Tensor`] or DLPack
/// export borrows the context any more.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let Some(plugin) = rm_plugin::doctest::plugin() else { return Ok(()) };
/// use rm_plugin::Context;
/// let ctx = Context::builder(&plugin)
///     .set("registry.ttl_s", "5")
///     .set("shm.namespace", "doc_context")
///     .build()?;
/// assert_eq!(ctx.config("registry.ttl_s")?, "5");
/// let error = Context::builder(&plugin).set("no.such.key", "1").build().unwrap_err();
/// assert!(matches!(error, rm_plugin::Error::ConfigUnknownKey(_)));
/// assert!(error.message().contains("no.such.key"));
/// # Ok(()) }
/// ```
pub struct Context {
    plugin: Plugin,
    raw: NonNull<sys::RmContext>,
    /// The host services the plugin copied into the context at creation,
    /// kept alive until after `context_destroy`.
    services: Option<std::sync::Arc<crate::services::Inner>>,
}

// SAFETY: the plugin's members are thread-safe on one context (REF:
// conventions); context_destroy runs only in Drop, which needs the context
// owned, so no other call on it can be in flight.
unsafe impl Send for Context {}
// SAFETY: as for Send; &Context only reaches thread-safe members.
unsafe impl Sync for Context {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("raw", &self.raw)
            .field("plugin", &self.plugin)
            .finish()
    }
}

/// How to build a [`Context`]: configuration pairs, a file, or neither
/// (the defaults). Later sources override earlier ones: defaults, the file
/// (or `$RM_PLUGIN_CONFIG`), then the pairs in order.
#[derive(Clone, Debug)]
pub struct ContextBuilder {
    plugin: Plugin,
    pairs: Vec<(String, String)>,
    file: Option<PathBuf>,
    ignore_env: bool,
}

impl ContextBuilder {
    /// Adds one `key = value` pair (keys and values: `abi/rm_plugin.h`,
    /// REF: config, or [`Plugin::config_keys`]).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> ContextBuilder {
        self.pairs.push((key.into(), value.into()));
        self
    }

    /// Reads a configuration file (`key = value` lines) before the pairs.
    pub fn file(mut self, path: impl AsRef<Path>) -> ContextBuilder {
        self.file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Ignores `$RM_PLUGIN_CONFIG` (`RM_CONTEXT_IGNORE_ENV`).
    pub fn ignore_env(mut self) -> ContextBuilder {
        self.ignore_env = true;
        self
    }

    /// Creates the context.
    pub fn build(self) -> Result<Context> {
        let mut c_pairs = Vec::with_capacity(self.pairs.len());
        for (key, value) in &self.pairs {
            c_pairs.push((
                crate::c_string(key, "configuration key")?,
                crate::c_string(value, "configuration value")?,
            ));
        }
        let entries: Vec<sys::RmConfigEntry> = c_pairs
            .iter()
            .map(|(k, v)| sys::RmConfigEntry {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        let c_file = match &self.file {
            Some(path) => Some(crate::c_path(path)?),
            None => None,
        };
        let mut options = sys::RmContextOptions::init();
        options.entries = if entries.is_empty() {
            ptr::null()
        } else {
            entries.as_ptr()
        };
        options.entry_count = entries.len() as u64;
        options.config_path = c_file
            .as_ref()
            .map_or(ptr::null(), |p: &CString| p.as_ptr());
        options.flags = if self.ignore_env {
            sys::RM_CONTEXT_IGNORE_ENV
        } else {
            0
        };
        let create = self
            .plugin
            .vtable()
            .context_create
            .expect("checked at load");
        let mut raw = ptr::null_mut();
        // The plugin copies the loaded object's current host services into
        // the context: make them this plugin's, and keep them with it.
        let (code, services) = self.plugin.with_own_services(|| {
            // SAFETY: options made with RM_STRUCT_INIT whose strings and
            // entries outlive the call (the plugin copies them), and a valid
            // output.
            unsafe { create(&options, &mut raw) }
        })?;
        match NonNull::new(raw) {
            Some(raw) if code == sys::RM_OK => Ok(Context {
                plugin: self.plugin,
                raw,
                services,
            }),
            _ => Err(self
                .plugin
                .error_without_context(if code == sys::RM_OK { -1 } else { code })),
        }
    }
}

/// What a context is (`rm_context_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextInfo {
    /// The version negotiated before the context was created.
    pub negotiated_abi_version: AbiVersion,
    /// Capabilities compiled into the plugin.
    pub features_built: Features,
    /// Capabilities this context enables (`features`).
    pub features_enabled: Features,
    /// The bundled allocator's version, or "" without shared memory.
    pub allocator: String,
    /// The context's private allocator arena, or `None`.
    pub allocator_arena: Option<u32>,
}

impl Context {
    /// A context with the defaults (and `$RM_PLUGIN_CONFIG`, if set).
    pub fn new(plugin: &Plugin) -> Result<Context> {
        Context::builder(plugin).build()
    }

    /// A context from configuration pairs.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let Some(plugin) = rm_plugin::doctest::plugin() else { return Ok(()) };
    /// let ctx = rm_plugin::Context::with_config(&plugin, &[("features", "model-registry")])?;
    /// assert!(!ctx.info()?.features_enabled.contains(rm_plugin::Features::SHARED_MEMORY));
    /// # Ok(()) }
    /// ```
    pub fn with_config(plugin: &Plugin, pairs: &[(&str, &str)]) -> Result<Context> {
        pairs
            .iter()
            .fold(Context::builder(plugin), |b, (k, v)| b.set(*k, *v))
            .build()
    }

    /// A context from a configuration file (`key = value` lines).
    pub fn from_file(plugin: &Plugin, path: impl AsRef<Path>) -> Result<Context> {
        Context::builder(plugin).file(path).build()
    }

    /// A builder for pairs, a file and flags together.
    pub fn builder(plugin: &Plugin) -> ContextBuilder {
        ContextBuilder {
            plugin: plugin.clone(),
            pairs: Vec::new(),
            file: None,
            ignore_env: false,
        }
    }

    /// The plugin this context belongs to.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The raw `rm_context *`, for calls the safe API does not offer; it is
    /// valid while `self` lives.
    pub fn as_raw(&self) -> *mut sys::RmContext {
        self.raw.as_ptr()
    }

    /// The error for a code a member returned on this context, with the
    /// thread's last-error message for it.
    pub(crate) fn error(&self, code: i32) -> Error {
        self.plugin.error_for(code, self.raw.as_ptr())
    }

    /// `Ok` for `RM_OK`, else the error with its message.
    pub(crate) fn check(&self, code: i32) -> Result<()> {
        if code == sys::RM_OK {
            Ok(())
        } else {
            Err(self.error(code))
        }
    }

    /// What the context is: versions, capabilities, allocator.
    pub fn info(&self) -> Result<ContextInfo> {
        let f = self.plugin.vtable().context_info.expect("checked at load");
        let mut out = sys::RmContextInfo::init();
        // SAFETY: a live context and a struct made with RM_STRUCT_INIT.
        self.check(unsafe { f(self.raw.as_ptr(), &mut out) })?;
        Ok(ContextInfo {
            negotiated_abi_version: AbiVersion::from_raw(out.negotiated_abi_version),
            features_built: Features(out.features_built),
            features_enabled: Features(out.features_enabled),
            allocator: crate::cstr_array(&out.allocator),
            allocator_arena: (out.allocator_arena != u32::MAX).then_some(out.allocator_arena),
        })
    }

    /// The effective value of a configuration key, in the accepted form
    /// (sizes in bytes, features as the enabled list).
    pub fn config(&self, key: &str) -> Result<String> {
        let f = self.plugin.vtable().config_get.expect("checked at load");
        let c_key = crate::c_string(key, "configuration key")?;
        let mut needed = 0u64;
        // SAFETY: a live context, a NUL-terminated key; a NULL buffer asks
        // for the size.
        let code = unsafe {
            f(
                self.raw.as_ptr(),
                c_key.as_ptr(),
                ptr::null_mut(),
                0,
                &mut needed,
            )
        };
        if code != sys::RM_OK && code != -15 {
            return Err(self.error(code));
        }
        let mut buffer = vec![0 as c_char; needed.max(1) as usize];
        // SAFETY: as above, with a buffer of the size the plugin asked for.
        let code = unsafe {
            f(
                self.raw.as_ptr(),
                c_key.as_ptr(),
                buffer.as_mut_ptr(),
                buffer.len() as u64,
                &mut needed,
            )
        };
        self.check(code)?;
        Ok(crate::cstr_array(&buffer))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if crate::services::in_service() {
            // Dropped inside a host service, which must not call into the
            // plugin: leak the context, and with it what it uses.
            std::mem::forget(self.services.take());
            std::mem::forget(self.plugin.clone());
            return;
        }
        let destroy = self
            .plugin
            .vtable()
            .context_destroy
            .expect("checked at load");
        // SAFETY: the context is live, owned, and nothing borrows it any more
        // (handles, tensors and DLPack exports borrow &Context), so no call
        // on it can race with its destruction.
        unsafe { destroy(self.raw.as_ptr()) };
    }
}
