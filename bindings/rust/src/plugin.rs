//! Finding, opening and negotiating with the plugin.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::services::{self, HostServices};
use crate::sys::{self, AbiStruct, RmPluginV1, RmPluginV1Base};

#[link(name = "dl")]
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
    fn dlclose(handle: *mut c_void) -> c_int;
}

// <dlfcn.h> on Linux (glibc and musl alike).
const RTLD_NOW: c_int = 0x0002;
const RTLD_LOCAL: c_int = 0;

/// The environment variable that names plugin directories (colon-separated),
/// searched before the install directories.
pub const PLUGIN_DIR_ENV: &str = "REMOTEMEDIA_PLUGIN_DIR";

/// An ABI version, `major.minor` (`RM_ABI_VERSION` in C).
///
/// ```
/// use rm_plugin::AbiVersion;
/// let v = AbiVersion::new(1, 2);
/// assert_eq!(v.raw(), 0x0001_0002);
/// assert_eq!(AbiVersion::from_raw(0x0001_0002), v);
/// assert_eq!(v.to_string(), "1.2");
/// assert!(AbiVersion::V1_4 > v);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    /// The major version: a new vtable type.
    pub major: u16,
    /// The minor version: members and fields appended.
    pub minor: u16,
}

impl AbiVersion {
    /// 1.0: contexts, configuration, the process-scope registry.
    pub const V1_0: AbiVersion = AbiVersion::new(1, 0);
    /// 1.1: shared-memory tensors, descriptors, DLPack.
    pub const V1_1: AbiVersion = AbiVersion::new(1, 1);
    /// 1.2: the node-scope registry and loader buffers.
    pub const V1_2: AbiVersion = AbiVersion::new(1, 2);
    /// 1.3: CUDA device tensors.
    pub const V1_3: AbiVersion = AbiVersion::new(1, 3);
    /// 1.4: model weights in device memory, `model_to_dlpack`.
    pub const V1_4: AbiVersion = AbiVersion::new(1, 4);
    /// The newest version this crate knows.
    pub const CURRENT: AbiVersion = AbiVersion::V1_4;

    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> AbiVersion {
        AbiVersion { major, minor }
    }

    /// Decodes the C encoding (major in the high 16 bits).
    pub const fn from_raw(raw: u32) -> AbiVersion {
        AbiVersion {
            major: (raw >> 16) as u16,
            minor: (raw & 0xffff) as u16,
        }
    }

    /// The C encoding, as `RM_ABI_VERSION(major, minor)` gives it.
    pub const fn raw(self) -> u32 {
        sys::abi_version(self.major as u32, self.minor as u32)
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A set of capabilities (`RM_FEATURE_*`).
///
/// ```
/// use rm_plugin::Features;
/// let both = Features::MODEL_REGISTRY | Features::SHARED_MEMORY;
/// assert!(both.contains(Features::SHARED_MEMORY));
/// assert!(!both.contains(Features::CUDA_IPC));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Features(pub u64);

impl Features {
    /// `"model-registry"`.
    pub const MODEL_REGISTRY: Features = Features(sys::RM_FEATURE_MODEL_REGISTRY);
    /// `"shared-memory"`.
    pub const SHARED_MEMORY: Features = Features(sys::RM_FEATURE_SHARED_MEMORY);
    /// `"cuda-ipc"` (1.3).
    pub const CUDA_IPC: Features = Features(sys::RM_FEATURE_CUDA_IPC);

    /// Whether every capability of `other` is in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }
}

struct Library {
    handle: NonNull<c_void>,
    vtable: NonNull<RmPluginV1>,
    abi_version: AbiVersion,
    path: PathBuf,
    /// The entry point and what was asked of it, to negotiate again before
    /// creating a context when another negotiation replaced the services.
    negotiate: sys::RmPluginNegotiateFn,
    range: (AbiVersion, AbiVersion),
    services: Option<Arc<services::Inner>>,
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and is closed once, when the
        // last Plugin clone (and so every Context, which holds one) is gone.
        // The plugin is linked -z nodelete, so this only drops a reference.
        unsafe { dlclose(self.handle.as_ptr()) };
    }
}

/// A loaded and negotiated plugin: its vtable and the version agreed.
///
/// Cheap to clone (a reference count); every [`crate::Context`] keeps one,
/// so the library stays open while anything made from it lives. `Send` and
/// `Sync`: the vtable is static and its members are thread-safe.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let Some(path) = rm_plugin::doctest::plugin_path() else { return Ok(()) };
/// let plugin = rm_plugin::Plugin::load(&path)?;
/// assert_eq!(plugin.name(), "rm_plugin");
/// assert!(plugin.abi_version() >= rm_plugin::AbiVersion::V1_0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Plugin {
    library: Arc<Library>,
}

// SAFETY: the vtable and the strings it points to are static and never
// freed while the library is open (the Arc keeps it open); every member is
// thread-safe by the header's conventions, except context_destroy, which
// Context calls only from Drop, when nothing else uses the context. The
// handle is only passed to dlclose, once.
unsafe impl Send for Library {}
// SAFETY: as for Send: shared access only reads the static vtable.
unsafe impl Sync for Library {}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.library.path)
            .field("abi_version", &self.library.abi_version)
            .field("version", &self.version())
            .finish()
    }
}

/// How to find and negotiate with the plugin; [`Plugin::discover`] and
/// [`Plugin::load`] cover the usual cases.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let Some(path) = rm_plugin::doctest::plugin_path() else { return Ok(()) };
/// use rm_plugin::{AbiVersion, PluginLoader};
/// // A host that only knows ABI 1.0 to 1.1 gets a vtable it may use as 1.1.
/// let plugin = PluginLoader::new().path(&path).abi_range(AbiVersion::V1_0, AbiVersion::V1_1).load()?;
/// assert_eq!(plugin.abi_version(), AbiVersion::V1_1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PluginLoader {
    path: Option<PathBuf>,
    dirs: Option<Vec<PathBuf>>,
    min: AbiVersion,
    max: AbiVersion,
    services: HostServices,
}

impl Default for PluginLoader {
    /// As [`PluginLoader::new`].
    fn default() -> Self {
        PluginLoader::new()
    }
}

impl PluginLoader {
    /// Discovery as the README describes it, any ABI from 1.0 to
    /// [`AbiVersion::CURRENT`].
    pub fn new() -> PluginLoader {
        PluginLoader {
            path: None,
            dirs: None,
            min: AbiVersion::V1_0,
            max: AbiVersion::CURRENT,
            services: HostServices::new(),
        }
    }

    /// Lends the plugin a log sink and/or clock (`rm_host_services`):
    /// every context created from the loaded [`Plugin`] (and its clones)
    /// uses them, and keeps them alive until it is dropped (see
    /// [`HostServices`]). Without this, the plugin logs to stderr.
    pub fn host_services(mut self, services: HostServices) -> PluginLoader {
        self.services = services;
        self
    }

    /// Opens this file instead of searching.
    pub fn path(mut self, path: impl AsRef<Path>) -> PluginLoader {
        self.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Searches these directories, in order, instead of
    /// `$REMOTEMEDIA_PLUGIN_DIR` and the install directories.
    pub fn search_dirs<I, P>(mut self, dirs: I) -> PluginLoader
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        self.dirs = Some(dirs.into_iter().map(|d| d.as_ref().to_path_buf()).collect());
        self
    }

    /// The inclusive range of ABI versions the host can use; the plugin
    /// picks the highest it also implements.
    pub fn abi_range(mut self, min: AbiVersion, max: AbiVersion) -> PluginLoader {
        self.min = min;
        self.max = max;
        self
    }

    /// The directories searched when no path is given: the ones named by
    /// `$REMOTEMEDIA_PLUGIN_DIR` (colon-separated, empty parts skipped),
    /// then [`install_dirs`].
    pub fn default_search_dirs() -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os(PLUGIN_DIR_ENV)
            .map(|value| {
                std::env::split_paths(&value)
                    .filter(|d| !d.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        dirs.extend(install_dirs());
        dirs
    }

    /// Finds the file, opens it and negotiates.
    pub fn load(&self) -> Result<Plugin> {
        let path = match &self.path {
            Some(path) => path.clone(),
            None => {
                let dirs = self
                    .dirs
                    .clone()
                    .unwrap_or_else(PluginLoader::default_search_dirs);
                let found = dirs
                    .iter()
                    .map(|d| d.join(sys::PLUGIN_FILE_NAME))
                    .find(|p| p.is_file());
                match found {
                    Some(path) => path,
                    None => {
                        let listed: Vec<String> =
                            dirs.iter().map(|d| d.display().to_string()).collect();
                        return Err(Error::Load(format!(
                            "{} not found in {} (${} then the install directories)",
                            sys::PLUGIN_FILE_NAME,
                            if listed.is_empty() {
                                "no directory".to_string()
                            } else {
                                listed.join(":")
                            },
                            PLUGIN_DIR_ENV
                        )));
                    }
                }
            }
        };
        open_and_negotiate(
            &path,
            self.min,
            self.max,
            self.services.clone().into_inner(),
        )
    }
}

/// Where `meson install` puts the plugin (`<libdir>/remotemedia/plugins`)
/// for the usual prefixes; a build can name another with the environment
/// variable `RM_PLUGIN_INSTALL_DIR` when it compiles this crate.
pub fn install_dirs() -> Vec<PathBuf> {
    if let Some(dir) = option_env!("RM_PLUGIN_INSTALL_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let triple = if cfg!(target_arch = "x86_64") {
        "x86_64-linux-gnu"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else {
        ""
    };
    let mut dirs = Vec::new();
    for prefix in ["/usr/local", "/usr"] {
        if !triple.is_empty() {
            dirs.push(PathBuf::from(format!(
                "{prefix}/lib/{triple}/remotemedia/plugins"
            )));
        }
        dirs.push(PathBuf::from(format!("{prefix}/lib/remotemedia/plugins")));
    }
    dirs
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the
    // next dl* call on this thread; it is copied at once.
    unsafe {
        let message = dlerror();
        if message.is_null() {
            "unknown dlopen error".to_string()
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        }
    }
}

/// One call of the entry point: the version and vtable, or the code and
/// the plugin's reason. The caller holds the services table for writing
/// and records the services on success.
fn negotiate_once(
    negotiate: sys::RmPluginNegotiateFn,
    min: AbiVersion,
    max: AbiVersion,
    services: Option<&Arc<services::Inner>>,
) -> (i32, u32, *const RmPluginV1, String) {
    let raw_services = services.map(services::raw_services);
    let mut reason = [0 as c_char; 512];
    let mut request = sys::RmNegotiateRequest::init();
    request.min_abi_version = min.raw();
    request.max_abi_version = max.raw();
    request.services = raw_services
        .as_ref()
        .map_or(ptr::null(), |s| s as *const sys::RmHostServices);
    request.error_buffer = reason.as_mut_ptr();
    request.error_buffer_size = reason.len() as u64;
    let mut picked = 0u32;
    let mut vtable: *const RmPluginV1 = ptr::null();
    // SAFETY: a request made with RM_STRUCT_INIT whose services struct and
    // error buffer outlive the call, and two valid output pointers. The
    // services' user pointer (the Arc) is kept alive by the caller's table
    // and by the contexts created with it.
    let code = unsafe { negotiate(&request, &mut picked, &mut vtable) };
    (code, picked, vtable, crate::cstr_array(&reason))
}

fn open_and_negotiate(
    path: &Path,
    min: AbiVersion,
    max: AbiVersion,
    host_services: Option<Arc<services::Inner>>,
) -> Result<Plugin> {
    services::forbid_reentry();
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Load(format!("{}: the path holds a NUL byte", path.display())))?;
    // SAFETY: a NUL-terminated path; the handle is owned by Library, which
    // closes it once.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW | RTLD_LOCAL) };
    let Some(handle) = NonNull::new(handle) else {
        return Err(Error::Load(format!(
            "dlopen {}: {}",
            path.display(),
            dl_error()
        )));
    };
    // SAFETY: a live handle and a NUL-terminated symbol name.
    let symbol = unsafe { dlsym(handle.as_ptr(), sys::ENTRY_POINT.as_ptr()) };
    if symbol.is_null() {
        let message = format!(
            "{} has no {:?}: {}",
            path.display(),
            sys::ENTRY_POINT,
            dl_error()
        );
        // SAFETY: the handle is live and not used again.
        unsafe { dlclose(handle.as_ptr()) };
        return Err(Error::Load(message));
    }
    // SAFETY: the header declares the entry point as rm_plugin_negotiate_fn;
    // POSIX allows converting dlsym's result to a function pointer.
    let negotiate: sys::RmPluginNegotiateFn = unsafe { std::mem::transmute(symbol) };
    let mut table = services::write_table();
    let (code, picked, vtable, message) =
        negotiate_once(negotiate, min, max, host_services.as_ref());
    let vtable = NonNull::new(vtable as *mut RmPluginV1);
    if vtable.is_some() && code == sys::RM_OK {
        // The plugin now points at these services (or none) for contexts
        // created from here on.
        services::set_current(&mut table, handle.as_ptr() as usize, host_services.clone());
    }
    drop(table);
    let library = match vtable {
        Some(vtable) if code == sys::RM_OK => Library {
            handle,
            vtable,
            abi_version: AbiVersion::from_raw(picked),
            path: path.to_path_buf(),
            negotiate,
            range: (min, max),
            services: host_services,
        },
        _ => {
            // SAFETY: the handle is live and not used again (no vtable escaped).
            unsafe { dlclose(handle.as_ptr()) };
            let code = if code == sys::RM_OK { -1 } else { code };
            let name = Error::code_name(code).unwrap_or("UNKNOWN");
            return Err(Error::from_code(
                code,
                name,
                format!(
                    "negotiation with {} for ABI {min} to {max} failed: {message}",
                    path.display()
                ),
            ));
        }
    };
    // The 1.0 members are the ones every later call leans on; a vtable that
    // is too short for them is not a plugin this crate can drive. Only the
    // leading struct_size is read before this check.
    let v1_0_size = std::mem::size_of::<RmPluginV1Base>();
    // SAFETY: every vtable starts with its u32 struct_size.
    let struct_size = unsafe { std::ptr::read(library.vtable.as_ptr() as *const u32) } as usize;
    if struct_size < v1_0_size {
        return Err(Error::Load(format!(
            "{}: vtable of {struct_size} bytes, smaller than ABI 1.0's {v1_0_size}",
            path.display()
        )));
    }
    let plugin = Plugin {
        library: Arc::new(library),
    };
    let v = plugin.vtable();
    let all_set = v.error_name.is_some()
        && v.strerror.is_some()
        && v.context_create.is_some()
        && v.context_destroy.is_some()
        && v.context_last_error.is_some()
        && v.context_info.is_some()
        && v.config_get.is_some()
        && v.config_key_at.is_some()
        && v.model_key_normalize.is_some()
        && v.model_get_or_load.is_some()
        && v.model_release.is_some()
        && v.model_evict.is_some()
        && v.registry_metrics.is_some()
        && v.registry_list.is_some();
    if !all_set {
        // The header promises every 1.0 member; checking once here lets
        // every later call rely on it instead of panicking.
        return Err(Error::Load(format!(
            "{}: a 1.0 member of the vtable is NULL",
            path.display()
        )));
    }
    Ok(plugin)
}

impl Plugin {
    /// Finds the plugin in `$REMOTEMEDIA_PLUGIN_DIR`, then the install
    /// directories, and negotiates any ABI from 1.0 to the newest this crate
    /// knows.
    pub fn discover() -> Result<Plugin> {
        PluginLoader::new().load()
    }

    /// Opens the plugin at `path` and negotiates as [`Plugin::discover`] does.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin> {
        PluginLoader::new().path(path).load()
    }

    /// The 1.0 members of the vtable, which every plugin has.
    ///
    /// # Panics
    /// Inside a host service (log sink or clock), which must not call back
    /// into the plugin.
    pub fn vtable(&self) -> &RmPluginV1Base {
        services::forbid_reentry();
        // SAFETY: the vtable is static while the library is open (self holds
        // it open), and load checked that it is at least as long as the 1.0
        // part, so the prefix is a valid RmPluginV1Base.
        unsafe { self.library.vtable.cast::<RmPluginV1Base>().as_ref() }
    }

    /// The whole vtable as a raw pointer, for what the safe API does not
    /// offer. Members newer than 1.0 exist only within its `struct_size`
    /// (check as `RM_PLUGIN_HAS` does before reading one).
    pub fn raw_vtable(&self) -> *const RmPluginV1 {
        self.library.vtable.as_ptr()
    }

    /// Makes the loaded object's current services this plugin's (negotiating
    /// again with its range if another negotiation replaced them), then
    /// runs `create` while no negotiation can change them, and returns its
    /// result with the services the created context keeps alive.
    pub(crate) fn with_own_services<T>(
        &self,
        create: impl FnOnce() -> T,
    ) -> Result<(T, Option<Arc<services::Inner>>)> {
        let lib = &self.library;
        let handle = lib.handle.as_ptr() as usize;
        {
            let table = services::read_table();
            if services::is_current(&table, handle, &lib.services) {
                return Ok((create(), lib.services.clone()));
            }
        }
        let mut table = services::write_table();
        if !services::is_current(&table, handle, &lib.services) {
            let (code, picked, vtable, message) = negotiate_once(
                lib.negotiate,
                lib.range.0,
                lib.range.1,
                lib.services.as_ref(),
            );
            if code != sys::RM_OK || vtable.is_null() || picked != lib.abi_version.raw() {
                let code = if code == sys::RM_OK { -2 } else { code };
                return Err(Error::from_code(
                    code,
                    Error::code_name(code).unwrap_or("UNKNOWN"),
                    format!(
                        "negotiating again with {} for its host services: {message}",
                        self.path().display()
                    ),
                ));
            }
            services::set_current(&mut table, handle, lib.services.clone());
        }
        Ok((create(), lib.services.clone()))
    }

    /// The ABI version negotiated: the newest both sides implement.
    pub fn abi_version(&self) -> AbiVersion {
        self.library.abi_version
    }

    /// The highest ABI version the plugin implements (its vtable's
    /// `abi_version`), which may be above the negotiated one.
    pub fn plugin_abi_version(&self) -> AbiVersion {
        AbiVersion::from_raw(self.vtable().abi_version)
    }

    /// The file that was opened.
    pub fn path(&self) -> &Path {
        &self.library.path
    }

    /// The plugin's name, `"rm_plugin"`.
    pub fn name(&self) -> String {
        crate::cstr_ptr(self.vtable().name)
    }

    /// The plugin's project version, e.g. `"0.5.0"`.
    pub fn version(&self) -> String {
        crate::cstr_ptr(self.vtable().version)
    }

    /// The capabilities compiled into the plugin.
    pub fn features_built(&self) -> Features {
        Features(self.vtable().features_built)
    }

    /// The plugin's name for a code, e.g. `"INVALID_KEY"` for -10.
    pub fn error_name(&self, code: i32) -> String {
        let f = self.vtable().error_name.expect("1.0 member");
        // SAFETY: a 1.0 member, callable with any value; returns a static string.
        crate::cstr_ptr(unsafe { f(code) })
    }

    /// The plugin's description of a code, e.g. `"malformed model key"`.
    pub fn strerror(&self, code: i32) -> String {
        let f = self.vtable().strerror.expect("1.0 member");
        // SAFETY: as error_name.
        crate::cstr_ptr(unsafe { f(code) })
    }

    /// Every configuration key the plugin accepts, in its stable order.
    pub fn config_keys(&self) -> Vec<String> {
        let f = self.vtable().config_key_at.expect("1.0 member");
        let mut keys = Vec::new();
        for index in 0u32.. {
            // SAFETY: a 1.0 member, callable with any index; NULL past the end.
            let key = unsafe { f(index) };
            if key.is_null() {
                break;
            }
            keys.push(crate::cstr_ptr(key));
        }
        keys
    }

    /// Checks a model key against the `name@device` grammar and returns its
    /// normalised form.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let Some(path) = rm_plugin::doctest::plugin_path() else { return Ok(()) };
    /// let plugin = rm_plugin::Plugin::load(&path)?;
    /// assert_eq!(plugin.normalize_key("whisper@CUDA")?, "whisper@cuda:0");
    /// assert!(matches!(plugin.normalize_key("whisper"), Err(rm_plugin::Error::InvalidKey(_))));
    /// # Ok(()) }
    /// ```
    pub fn normalize_key(&self, key: &str) -> Result<String> {
        let f = self.vtable().model_key_normalize.expect("1.0 member");
        let c_key = crate::c_string(key, "model key")?;
        let mut out = [0 as c_char; sys::RM_MODEL_KEY_MAX];
        // SAFETY: a NUL-terminated key and an output of RM_MODEL_KEY_MAX
        // bytes, which always suffices.
        let code = unsafe { f(c_key.as_ptr(), out.as_mut_ptr(), out.len() as u64) };
        if code != sys::RM_OK {
            return Err(self.error_without_context(code));
        }
        Ok(crate::cstr_array(&out))
    }

    /// The error for `code` from a call made without a context: the message
    /// is `context_last_error(NULL)` on this thread.
    pub(crate) fn error_without_context(&self, code: i32) -> Error {
        self.error_for(code, ptr::null())
    }

    pub(crate) fn error_for(&self, code: i32, context: *const sys::RmContext) -> Error {
        let last_error = self.vtable().context_last_error.expect("1.0 member");
        // SAFETY: a 1.0 member; `context` is NULL or a live context; the
        // message is copied before any other call into the plugin.
        let message = crate::cstr_ptr(unsafe { last_error(context) });
        Error::from_code(code, self.error_name(code), message)
    }

    pub(crate) fn unsupported(&self, member: &'static str, since: &'static str) -> Error {
        Error::Unsupported {
            member,
            since,
            plugin: format!(
                "rm_plugin {} at {}: ABI {} negotiated, vtable ABI {} of {} bytes",
                self.version(),
                self.path().display(),
                self.abi_version(),
                self.plugin_abi_version(),
                self.vtable().struct_size
            ),
        }
    }
}

/// A vtable member newer than 1.0, checked as `RM_PLUGIN_HAS` does (the
/// vtable is long enough and the member is set) and against the negotiated
/// version; `Error::Unsupported` otherwise.
macro_rules! member {
    ($plugin:expr, $member:ident, $major:literal, $minor:literal) => {{
        let plugin: &$crate::Plugin = $plugin;
        let vtable = plugin.vtable();
        let end =
            std::mem::offset_of!($crate::sys::RmPluginV1, $member) + std::mem::size_of::<usize>();
        let since = $crate::AbiVersion::new($major, $minor);
        if (vtable.struct_size as usize) < end || plugin.abi_version() < since {
            Err(plugin.unsupported(stringify!($member), concat!($major, ".", $minor)))
        } else {
            // SAFETY: the plugin's vtable is at least `end` bytes long, so
            // the member lies inside the plugin's static vtable.
            match unsafe { std::ptr::addr_of!((*plugin.raw_vtable()).$member).read() } {
                Some(function) => Ok(function),
                None => Err(plugin.unsupported(stringify!($member), concat!($major, ".", $minor))),
            }
        }
    }};
}
pub(crate) use member;
