//! Errors: one variant per code of the plugin's `RM_ERROR_MAP`, plus the
//! failures that happen before there is a plugin to ask (loading) or that a
//! plugin too old to have a member causes.

use std::fmt;

/// What the plugin said about a failure: its name for the code and the
/// calling thread's `context_last_error()` message, read right after the
/// call that failed (the plugin keeps one message per thread, so later
/// calls would overwrite it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detail {
    /// The plugin's `error_name()` for the code, e.g. `"INVALID_KEY"`.
    pub name: String,
    /// What went wrong, naming the key, value, limit, segment or file; may
    /// be empty when the plugin recorded nothing.
    pub message: String,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! plugin_errors {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal; )*) => {
        /// A failure, as a variant per plugin error code (`RM_E_*`, same
        /// order and numbers as `RM_ERROR_MAP` in `abi/rm_plugin.h`) and a
        /// few that arise in the crate itself.
        ///
        /// ```
        /// use rm_plugin::Error;
        /// let error = Error::from_code(-10, "INVALID_KEY", "no '@' in \"whisper\"");
        /// assert!(matches!(error, Error::InvalidKey(_)));
        /// assert_eq!(error.code(), Some(-10));
        /// assert_eq!(error.to_string(), "INVALID_KEY (-10): no '@' in \"whisper\"");
        /// ```
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Error {
            $( $(#[$doc])* $variant(Detail), )*
            /// A code this crate does not know (a newer plugin's).
            Unknown {
                /// The code the plugin returned.
                code: i32,
                /// The plugin's name and message for it.
                detail: Detail,
            },
            /// The plugin could not be found, opened or negotiated with
            /// (no code: there is no vtable yet). The message names the path
            /// or the directories searched.
            Load(String),
            /// The loaded plugin is too old to have a member (its vtable is
            /// shorter, or the member is NULL): call nothing newer than
            /// [`crate::Plugin::abi_version`] offers.
            Unsupported {
                /// The vtable member, e.g. `"tensor_allocate"`.
                member: &'static str,
                /// The ABI version that added it, e.g. `"1.1"`.
                since: &'static str,
                /// What the plugin offers: its vtable's `abi_version` and size.
                plugin: String,
            },
        }

        impl Error {
            /// The error for a plugin code, with the plugin's name for it and
            /// its message. A code of 0 (success) is not an error; it gives
            /// `Unknown` so that a caller bug cannot pass for success.
            pub fn from_code(code: i32, name: impl Into<String>, message: impl Into<String>) -> Error {
                let detail = Detail { name: name.into(), message: message.into() };
                match code {
                    $( $code => Error::$variant(detail), )*
                    _ => Error::Unknown { code, detail },
                }
            }

            /// The plugin's code (`RM_E_*`), or `None` for [`Error::Load`]
            /// and [`Error::Unsupported`].
            pub fn code(&self) -> Option<i32> {
                match self {
                    $( Error::$variant(_) => Some($code), )*
                    Error::Unknown { code, .. } => Some(*code),
                    Error::Load(_) | Error::Unsupported { .. } => None,
                }
            }

            /// The plugin's name and message, when the error has a code.
            pub fn detail(&self) -> Option<&Detail> {
                match self {
                    $( Error::$variant(detail) => Some(detail), )*
                    Error::Unknown { detail, .. } => Some(detail),
                    Error::Load(_) | Error::Unsupported { .. } => None,
                }
            }

            /// The name the header gives a code (`RM_E_` left off), or
            /// `None` for a code it does not list. Needs no plugin.
            pub fn code_name(code: i32) -> Option<&'static str> {
                match code {
                    0 => Some("OK"),
                    $( $code => Some($name), )*
                    _ => None,
                }
            }
        }
    };
}

plugin_errors! {
    /// `RM_E_INVALID_ARGUMENT`: an argument the plugin (or this crate,
    /// before calling it) refused.
    InvalidArgument = -1, "INVALID_ARGUMENT";
    /// `RM_E_INCOMPATIBLE_VERSION`: no ABI version in common with the host.
    IncompatibleVersion = -2, "INCOMPATIBLE_VERSION";
    /// `RM_E_STRUCT_SIZE`: a struct smaller than its oldest published size.
    StructSize = -3, "STRUCT_SIZE";
    /// `RM_E_NO_MEMORY`: out of memory (or /dev/shm full).
    NoMemory = -4, "NO_MEMORY";
    /// `RM_E_FEATURE_DISABLED`: the capability is not enabled in this context.
    FeatureDisabled = -5, "FEATURE_DISABLED";
    /// `RM_E_FEATURE_UNAVAILABLE`: the capability was not built into the plugin.
    FeatureUnavailable = -6, "FEATURE_UNAVAILABLE";
    /// `RM_E_CONFIG_UNKNOWN_KEY`: an unknown configuration key.
    ConfigUnknownKey = -7, "CONFIG_UNKNOWN_KEY";
    /// `RM_E_CONFIG_INVALID_VALUE`: a malformed or out-of-range value.
    ConfigInvalidValue = -8, "CONFIG_INVALID_VALUE";
    /// `RM_E_CONFIG_FILE`: the configuration file is unreadable or malformed.
    ConfigFile = -9, "CONFIG_FILE";
    /// `RM_E_INVALID_KEY`: a model key that breaks the `name@device` grammar.
    InvalidKey = -10, "INVALID_KEY";
    /// `RM_E_NOT_FOUND`: no such entry.
    NotFound = -11, "NOT_FOUND";
    /// `RM_E_BUSY`: the entry is in use.
    Busy = -12, "BUSY";
    /// `RM_E_LOADER_FAILED`: a model loader failed (or panicked).
    LoaderFailed = -13, "LOADER_FAILED";
    /// `RM_E_LOAD_CYCLE`: model loaders request each other in a cycle.
    LoadCycle = -14, "LOAD_CYCLE";
    /// `RM_E_BUFFER_TOO_SMALL`: an output buffer was too small.
    BufferTooSmall = -15, "BUFFER_TOO_SMALL";
    /// `RM_E_FORKED`: the context belongs to the parent of a `fork()`.
    Forked = -16, "FORKED";
    /// `RM_E_ALLOCATOR`: the bundled allocator failed.
    Allocator = -17, "ALLOCATOR";
    /// `RM_E_SYSTEM`: an operating system call failed.
    System = -18, "SYSTEM";
    /// `RM_E_SHUTTING_DOWN`: the context is being destroyed.
    ShuttingDown = -19, "SHUTTING_DOWN";
    /// `RM_E_NOT_SHAREABLE`: the tensor (or model) is in private memory.
    NotShareable = -20, "NOT_SHAREABLE";
    /// `RM_E_INVALID_DESCRIPTOR`: a malformed or forged tensor descriptor.
    InvalidDescriptor = -21, "INVALID_DESCRIPTOR";
    /// `RM_E_STALE_DESCRIPTOR`: the descriptor names memory that is gone.
    StaleDescriptor = -22, "STALE_DESCRIPTOR";
    /// `RM_E_QUOTA_EXCEEDED`: a quota or limit would be exceeded.
    QuotaExceeded = -23, "QUOTA_EXCEEDED";
    /// `RM_E_CORRUPT_STATE`: shared state is malformed, foreign or missing.
    CorruptState = -24, "CORRUPT_STATE";
    /// `RM_E_DEVICE_UNAVAILABLE` (1.3): no usable CUDA driver or device.
    DeviceUnavailable = -25, "DEVICE_UNAVAILABLE";
}

impl Error {
    /// An `InvalidArgument` raised by the crate itself (before any call),
    /// worded as the plugin would.
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::from_code(-1, "INVALID_ARGUMENT", message)
    }

    /// The message: the plugin's, or the crate's for the variants without a
    /// code.
    pub fn message(&self) -> String {
        match self {
            Error::Load(message) => message.clone(),
            Error::Unsupported {
                member,
                since,
                plugin,
            } => {
                format!("the plugin ({plugin}) has no {member} (ABI {since})")
            }
            other => other
                .detail()
                .map(|d| d.message.clone())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code(), self.detail()) {
            (Some(code), Some(detail)) if detail.message.is_empty() => {
                write!(f, "{} ({code})", detail.name)
            }
            (Some(code), Some(detail)) => write!(f, "{} ({code}): {}", detail.name, detail.message),
            _ => match self {
                Error::Load(message) => write!(f, "loading rm_plugin: {message}"),
                other => f.write_str(&other.message()),
            },
        }
    }
}

impl std::error::Error for Error {}
