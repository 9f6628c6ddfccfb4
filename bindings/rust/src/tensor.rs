//! Shared-memory (and device) tensors: allocation, typed access,
//! descriptors, DLPack, pool statistics and reclaim.

use std::ffi::{c_char, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::plugin::member;
use crate::sys::{self, AbiStruct};

/// An element type (`rm_dtype`, DLPack's DLDataType). The plugin accepts
/// exactly the table in the header: int and uint of 8 to 64 bits, float
/// 16/32/64, bfloat16, complex 64/128, bool 8, with `lanes >= 1`.
///
/// ```
/// use rm_plugin::DType;
/// assert_eq!(DType::F32.element_bytes(), 4);
/// assert_eq!(DType::new(2, 32, 4).element_bytes(), 16); // float32x4
/// assert_eq!(DType::BF16.to_string(), "bfloat16");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DType(pub sys::RmDtype);

impl DType {
    /// int8.
    pub const I8: DType = DType::new(0, 8, 1);
    /// int16.
    pub const I16: DType = DType::new(0, 16, 1);
    /// int32.
    pub const I32: DType = DType::new(0, 32, 1);
    /// int64.
    pub const I64: DType = DType::new(0, 64, 1);
    /// uint8.
    pub const U8: DType = DType::new(1, 8, 1);
    /// uint16.
    pub const U16: DType = DType::new(1, 16, 1);
    /// uint32.
    pub const U32: DType = DType::new(1, 32, 1);
    /// uint64.
    pub const U64: DType = DType::new(1, 64, 1);
    /// float16.
    pub const F16: DType = DType::new(2, 16, 1);
    /// float32.
    pub const F32: DType = DType::new(2, 32, 1);
    /// float64.
    pub const F64: DType = DType::new(2, 64, 1);
    /// bfloat16.
    pub const BF16: DType = DType::new(4, 16, 1);
    /// complex64.
    pub const C64: DType = DType::new(5, 64, 1);
    /// complex128.
    pub const C128: DType = DType::new(5, 128, 1);
    /// bool (one byte).
    pub const BOOL: DType = DType::new(6, 8, 1);

    /// Any code, bits and lanes (the plugin checks them).
    pub const fn new(code: u8, bits: u8, lanes: u16) -> DType {
        DType(sys::RmDtype { code, bits, lanes })
    }

    /// Bytes per element (bits / 8 * lanes).
    pub const fn element_bytes(self) -> usize {
        self.0.bits as usize / 8 * self.0.lanes as usize
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0.code {
            0 => "int",
            1 => "uint",
            2 => "float",
            4 => "bfloat",
            5 => "complex",
            6 => "bool",
            _ => "code",
        };
        if self.0.code == 6 && self.0.bits == 8 {
            f.write_str("bool")?;
        } else {
            write!(f, "{name}{}", self.0.bits)?;
        }
        if self.0.lanes != 1 {
            write!(f, "x{}", self.0.lanes)?;
        }
        Ok(())
    }
}

impl fmt::Debug for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A Rust type that is one element of a [`DType`], for typed slices.
///
/// # Safety
/// `DTYPE` has the size and alignment of `Self`, and every bit pattern of
/// that size is a valid `Self` (data in shared memory is whatever another
/// process wrote).
pub unsafe trait Element: Copy + 'static {
    /// The dtype whose elements are `Self`.
    const DTYPE: DType;
}

macro_rules! elements {
    ($($t:ty => $d:ident),*) => {$(
        // SAFETY: a primitive of exactly the dtype's size for which every
        // bit pattern is valid.
        unsafe impl Element for $t { const DTYPE: DType = DType::$d; }
    )*};
}
elements!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64, f32 => F32, f64 => F64);

/// What to allocate (`rm_tensor_spec`): dtype and shape, and optionally
/// strides, alignment, a session, flags and (ABI 1.3) a device.
///
/// ```
/// use rm_plugin::{DType, TensorSpec};
/// let spec = TensorSpec::new(DType::F32, &[80, 3000]).session(42).zeroed();
/// assert_eq!(spec.shape(), &[80, 3000]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    dtype: DType,
    shape: Vec<i64>,
    strides: Option<Vec<i64>>,
    alignment: u64,
    session: u64,
    flags: u64,
    device: String,
}

impl TensorSpec {
    /// A C-contiguous tensor of this dtype and shape in host memory.
    pub fn new(dtype: DType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            dtype,
            shape: shape.to_vec(),
            strides: None,
            alignment: 0,
            session: 0,
            flags: 0,
            device: String::new(),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// Strides in elements (`RM_TENSOR_ALLOC_STRIDED`).
    pub fn strides(mut self, strides: &[i64]) -> TensorSpec {
        self.strides = Some(strides.to_vec());
        self
    }

    /// Alignment of the data: 0 or a power of two up to 2 MiB (at least 64
    /// is always given).
    pub fn alignment(mut self, alignment: u64) -> TensorSpec {
        self.alignment = alignment;
        self
    }

    /// The session charged for `shm.session_quota`.
    pub fn session(mut self, session: u64) -> TensorSpec {
        self.session = session;
        self
    }

    /// Zero the data (`RM_TENSOR_ALLOC_ZERO`).
    pub fn zeroed(mut self) -> TensorSpec {
        self.flags |= sys::RM_TENSOR_ALLOC_ZERO;
        self
    }

    /// Fail with `NoMemory` rather than fall back to private memory
    /// (`RM_TENSOR_ALLOC_SHARED_ONLY`).
    pub fn shared_only(mut self) -> TensorSpec {
        self.flags |= sys::RM_TENSOR_ALLOC_SHARED_ONLY;
        self
    }

    /// Where the tensor lives (ABI 1.3): `""`/`"cpu"`, or `"cuda:N"`.
    pub fn device(mut self, device: &str) -> TensorSpec {
        self.device = device.to_string();
        self
    }

    fn is_device(&self) -> bool {
        !self.device.is_empty() && self.device != "cpu"
    }

    pub(crate) fn to_raw(&self) -> Result<sys::RmTensorSpec> {
        let mut raw = sys::RmTensorSpec::init();
        if self.shape.len() > sys::RM_TENSOR_MAX_DIMS {
            return Err(Error::invalid(format!(
                "{} dimensions; at most {}",
                self.shape.len(),
                sys::RM_TENSOR_MAX_DIMS
            )));
        }
        raw.dtype = self.dtype.0;
        raw.ndim = self.shape.len() as u32;
        raw.shape[..self.shape.len()].copy_from_slice(&self.shape);
        if let Some(strides) = &self.strides {
            if strides.len() != self.shape.len() {
                return Err(Error::invalid(format!(
                    "{} strides for {} dimensions",
                    strides.len(),
                    self.shape.len()
                )));
            }
            raw.strides[..strides.len()].copy_from_slice(strides);
            raw.flags |= sys::RM_TENSOR_ALLOC_STRIDED;
        }
        raw.alignment = self.alignment;
        raw.session = self.session;
        raw.flags |= self.flags;
        if self.device.len() >= raw.device.len() || self.device.contains('\0') {
            return Err(Error::invalid(format!(
                "device {:?}: at most 15 bytes, no NUL",
                self.device
            )));
        }
        for (slot, byte) in raw.device.iter_mut().zip(self.device.bytes()) {
            *slot = byte as c_char;
        }
        Ok(raw)
    }
}

/// Where a tensor's data is (DLPack's DLDevice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory (kDLCPU).
    Cpu,
    /// CUDA device memory; the ordinal in this process (kDLCUDA).
    Cuda(i32),
    /// Any other DLPack device type and id.
    Other(i32, i32),
}

impl Device {
    fn from_raw(raw: sys::RmDlDevice) -> Device {
        match raw.device_type {
            1 => Device::Cpu,
            2 => Device::Cuda(raw.device_id),
            other => Device::Other(other, raw.device_id),
        }
    }
}

/// What a tensor handle refers to (`rm_tensor_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The first element: a host pointer, or a device pointer for CUDA.
    pub data: *mut c_void,
    /// The bytes the shape and strides span.
    pub nbytes: u64,
    /// The element type.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<i64>,
    /// The strides, in elements (always set).
    pub strides: Vec<i64>,
    /// The session charged.
    pub session: u64,
    /// The data may be written through this handle.
    pub writable: bool,
    /// In a pool: export works.
    pub shareable: bool,
    /// From an import.
    pub imported: bool,
    /// Allocated by this context.
    pub owned: bool,
    /// The pool (or device table) id; 0 for private memory.
    pub pool_id: u64,
    /// The allocating process.
    pub owner_pid: u32,
    /// Where the data is (1.3; `Cpu` from an older plugin).
    pub device: Device,
    /// The device's UUID; zero for CPU (1.3).
    pub device_uuid: [u8; 16],
}

impl TensorInfo {
    /// Number of elements (the product of the shape).
    pub fn elements(&self) -> usize {
        self.shape.iter().map(|&d| d.max(0) as usize).product()
    }

    /// Whether the strides are the C-contiguous ones for the shape.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1i64;
        for (dim, stride) in self.shape.iter().zip(&self.strides).rev() {
            if *dim > 1 && *stride != expected {
                return false;
            }
            expected = expected.saturating_mul((*dim).max(1));
        }
        true
    }
}

/// Whether an import may write (`RM_TENSOR_IMPORT_WRITABLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A read-only view (mapped `PROT_READ` for host memory).
    ReadOnly,
    /// A writable view.
    Writable,
}

impl Access {
    fn flags(self) -> u64 {
        match self {
            Access::ReadOnly => 0,
            Access::Writable => sys::RM_TENSOR_IMPORT_WRITABLE,
        }
    }
}

/// A tensor descriptor (`RM_TENSOR_DESCRIPTOR_SIZE` bytes): the name of a
/// live tensor of a pool, to send to another process. Not a reference: keep
/// the exporting [`Tensor`] until the receiver imported it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Descriptor([u8; sys::RM_TENSOR_DESCRIPTOR_SIZE]);

impl Descriptor {
    /// The descriptor's size in bytes.
    pub const SIZE: usize = sys::RM_TENSOR_DESCRIPTOR_SIZE;

    /// A descriptor from bytes received (checked by the plugin on import;
    /// only the length here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Descriptor> {
        let array: [u8; sys::RM_TENSOR_DESCRIPTOR_SIZE] = bytes.try_into().map_err(|_| {
            Error::from_code(
                -21,
                "INVALID_DESCRIPTOR",
                format!("{} bytes; a descriptor has {}", bytes.len(), Self::SIZE),
            )
        })?;
        Ok(Descriptor(array))
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Descriptor({} bytes)", self.0.len())
    }
}

/// A tensor handle (`rm_tensor`), released on `Drop`. Borrows its context.
///
/// `Send` and `Sync`: tensor members are thread-safe; the release, which
/// must not race with other calls on the handle, needs the handle owned.
///
/// Aliasing: the data is shared memory. The borrow checker orders the
/// slices of one handle; other handles on the same tensor (imports in this
/// or another process) can read and write it meanwhile, as with any shared
/// mapping, so the host's own protocol (the descriptor handoff, an
/// acknowledgement) must order writes before the other side reads.
pub struct Tensor<'ctx> {
    ctx: &'ctx Context,
    raw: NonNull<sys::RmTensor>,
}

// SAFETY: tensor members are thread-safe (header, REF: conventions); the
// release, the one call that must not race with others on the handle,
// happens in Drop, which needs the handle owned.
unsafe impl Send for Tensor<'_> {}
// SAFETY: &Tensor reaches only thread-safe members and shared slices.
unsafe impl Sync for Tensor<'_> {}

impl fmt::Debug for Tensor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor").field("raw", &self.raw).finish()
    }
}

impl Context {
    fn tensor(&self, code: i32, raw: *mut sys::RmTensor) -> Result<Tensor<'_>> {
        self.check(code)?;
        let raw =
            NonNull::new(raw).ok_or_else(|| Error::invalid("the plugin returned no tensor"))?;
        Ok(Tensor { ctx: self, raw })
    }

    /// Allocates a tensor: in the context's shared-memory pool (or, unless
    /// [`TensorSpec::shared_only`], private memory when /dev/shm is full),
    /// or with a `cuda:N` device (ABI 1.3) in device memory.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let Some(plugin) = rm_plugin::doctest::plugin() else { return Ok(()) };
    /// use rm_plugin::{Context, DType, TensorSpec};
    /// let ctx = Context::with_config(&plugin, &[("shm.namespace", "doc_allocate")])?;
    /// let mut t = ctx.allocate(&TensorSpec::new(DType::F32, &[2, 3]).zeroed())?;
    /// t.as_mut_slice::<f32>()?.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    /// assert_eq!(t.as_slice::<f32>()?[5], 6.0);
    /// assert!(t.as_slice::<i32>().is_err()); // not the tensor's dtype
    /// # Ok(()) }
    /// ```
    pub fn allocate(&self, spec: &TensorSpec) -> Result<Tensor<'_>> {
        let f = member!(self.plugin(), tensor_allocate, 1, 1)?;
        if spec.is_device() {
            // An older plugin reads only the 1.1 part of the spec and would
            // silently allocate host memory.
            member!(self.plugin(), cuda_info, 1, 3)?;
        }
        let raw_spec = spec.to_raw()?;
        let mut out = ptr::null_mut();
        // SAFETY: a live context, a spec made with RM_STRUCT_INIT, an output.
        let code = unsafe { f(self.as_raw(), &raw_spec, &mut out) };
        self.tensor(code, out)
    }

    /// Imports a descriptor: a view of the same memory, no copy.
    pub fn import(&self, descriptor: &Descriptor, access: Access) -> Result<Tensor<'_>> {
        self.import_bytes(descriptor.as_bytes(), access)
    }

    /// Imports descriptor bytes: a pool descriptor (200 bytes), or an
    /// inline one from [`Tensor::export_inline`] (a private copy).
    pub fn import_bytes(&self, bytes: &[u8], access: Access) -> Result<Tensor<'_>> {
        let f = member!(self.plugin(), tensor_import, 1, 1)?;
        let mut out = ptr::null_mut();
        // SAFETY: a live context, `bytes.len()` readable bytes, an output.
        let code = unsafe {
            f(
                self.as_raw(),
                bytes.as_ptr() as *const c_void,
                bytes.len() as u64,
                access.flags(),
                &mut out,
            )
        };
        self.tensor(code, out)
    }

    /// Imports the text form (`rmt1.` and base64url).
    pub fn import_text(&self, text: &str, access: Access) -> Result<Tensor<'_>> {
        let f = member!(self.plugin(), tensor_import_text, 1, 1)?;
        let c_text = crate::c_string(text, "descriptor text")?;
        let mut out = ptr::null_mut();
        // SAFETY: a live context, NUL-terminated text, an output.
        let code = unsafe { f(self.as_raw(), c_text.as_ptr(), access.flags(), &mut out) };
        self.tensor(code, out)
    }

    /// This context's pool counters (and device tensors', 1.3).
    pub fn pool_stats(&self) -> Result<PoolStats> {
        let f = member!(self.plugin(), tensor_pool_stats, 1, 1)?;
        let mut s = sys::RmTensorPoolStats::init();
        // SAFETY: a live context and a struct made with RM_STRUCT_INIT.
        self.check(unsafe { f(self.as_raw(), &mut s) })?;
        Ok(PoolStats {
            pool_name: crate::cstr_array(&s.pool_name),
            pool_id: s.pool_id,
            pool_bytes: s.pool_bytes,
            live_tensors: s.live_tensors,
            live_bytes: s.live_bytes,
            committed_bytes: s.committed_bytes,
            heap_tensors: s.heap_tensors,
            heap_bytes: s.heap_bytes,
            allocations: s.allocations,
            fallbacks: s.fallbacks,
            frees: s.frees,
            remote_releases: s.remote_releases,
            holders: s.holders,
            dead_holders_reclaimed: s.dead_holders_reclaimed,
            holds_reclaimed: s.holds_reclaimed,
            imports: s.imports,
            pools_mapped: s.pools_mapped,
            startup_segments_unlinked: s.startup_segments_unlinked,
            startup_bytes_unlinked: s.startup_bytes_unlinked,
            cuda_tensors: s.cuda_tensors,
            cuda_bytes: s.cuda_bytes,
            cuda_blocks: s.cuda_blocks,
            cuda_block_bytes: s.cuda_block_bytes,
            cuda_handles_opened: s.cuda_handles_opened,
            cuda_handles_open: s.cuda_handles_open,
            cuda_handle_cache_hits: s.cuda_handle_cache_hits,
            cuda_blocks_orphaned: s.cuda_blocks_orphaned,
        })
    }

    /// Bytes of live tensors charged to `session` in this context.
    pub fn session_bytes(&self, session: u64) -> Result<u64> {
        let f = member!(self.plugin(), tensor_session_bytes, 1, 1)?;
        let mut bytes = 0;
        // SAFETY: a live context and an output.
        self.check(unsafe { f(self.as_raw(), session, &mut bytes) })?;
        Ok(bytes)
    }

    /// Drops holds of dead importers, frees what that leaves, unmaps pools
    /// of gone owners, unlinks dead owners' segments in the namespace.
    pub fn reclaim_tensors(&self) -> Result<ReclaimReport> {
        let f = member!(self.plugin(), tensor_reclaim, 1, 1)?;
        let mut r = sys::RmReclaimReport::init();
        // SAFETY: a live context and a struct made with RM_STRUCT_INIT.
        self.check(unsafe { f(self.as_raw(), &mut r) })?;
        Ok(ReclaimReport {
            dead_holders: r.dead_holders,
            holds_dropped: r.holds_dropped,
            tensors_freed: r.tensors_freed,
            segments_unlinked: r.segments_unlinked,
            bytes_unlinked: r.bytes_unlinked,
            cuda_handles_closed: r.cuda_handles_closed,
            cuda_blocks_freed: r.cuda_blocks_freed,
        })
    }

    /// The pools (and device tables, 1.3) of the context's namespace in
    /// /dev/shm, sorted by name (what `rmctl ls` shows).
    pub fn shm_list(&self) -> Result<Vec<ShmPoolInfo>> {
        let f = member!(self.plugin(), shm_list, 1, 1)?;
        let rows: Vec<sys::RmShmPoolInfo> = crate::list_rows(self, |out, capacity, count| {
            // SAFETY: `out` holds `capacity` rows of the size passed.
            unsafe {
                f(
                    self.as_raw(),
                    out,
                    std::mem::size_of::<sys::RmShmPoolInfo>() as u32,
                    capacity,
                    count,
                )
            }
        })?;
        Ok(rows
            .iter()
            .map(|r| ShmPoolInfo {
                name: crate::cstr_array(&r.name),
                pool_id: r.pool_id,
                owner_pid: r.owner_pid,
                owner_alive: r.owner_alive != 0,
                owner_start_time: r.owner_start_time,
                pool_bytes: r.pool_bytes,
                committed_bytes: r.committed_bytes,
                live_tensors: r.live_tensors,
                live_bytes: r.live_bytes,
                holders: r.holders,
                readable: r.readable != 0,
                memory: match r.memory {
                    sys::RM_MEMORY_CUDA => Memory::Cuda,
                    _ => Memory::Shm,
                },
                device_blocks: r.device_blocks,
            })
            .collect())
    }
}

impl<'ctx> Tensor<'ctx> {
    pub(crate) fn from_parts(ctx: &'ctx Context, raw: NonNull<sys::RmTensor>) -> Tensor<'ctx> {
        Tensor { ctx, raw }
    }

    /// The context the handle belongs to.
    pub fn context(&self) -> &'ctx Context {
        self.ctx
    }

    /// The raw `rm_tensor *`, valid while `self` lives.
    pub fn as_raw(&self) -> *mut sys::RmTensor {
        self.raw.as_ptr()
    }

    /// What the handle refers to.
    pub fn info(&self) -> Result<TensorInfo> {
        let f = member!(self.ctx.plugin(), tensor_info, 1, 1)?;
        let mut i = sys::RmTensorInfo::init();
        // SAFETY: a live handle of this context and a struct made with
        // RM_STRUCT_INIT.
        let code = unsafe { f(self.ctx.as_raw(), self.raw.as_ptr(), &mut i) };
        self.ctx.check(code)?;
        let ndim = (i.ndim as usize).min(sys::RM_TENSOR_MAX_DIMS);
        // A plugin older than 1.3 leaves the device zero: that is the host.
        let device = if i.device.device_type == 0 {
            Device::Cpu
        } else {
            Device::from_raw(i.device)
        };
        Ok(TensorInfo {
            data: i.data,
            nbytes: i.nbytes,
            dtype: DType(i.dtype),
            shape: i.shape[..ndim].to_vec(),
            strides: i.strides[..ndim].to_vec(),
            session: i.session,
            writable: i.flags & sys::RM_TENSOR_WRITABLE != 0,
            shareable: i.flags & sys::RM_TENSOR_SHAREABLE != 0,
            imported: i.flags & sys::RM_TENSOR_IMPORTED != 0,
            owned: i.flags & sys::RM_TENSOR_OWNED != 0,
            pool_id: i.pool_id,
            owner_pid: i.owner_pid,
            device,
            device_uuid: i.device_uuid,
        })
    }

    fn host_view(&self, dtype: Option<DType>, write: bool) -> Result<(TensorInfo, usize)> {
        let info = self.info()?;
        if info.device != Device::Cpu {
            return Err(Error::invalid(format!(
                "a {:?} tensor: its data is not host memory",
                info.device
            )));
        }
        if write && !info.writable {
            return Err(Error::invalid(
                "a read-only view: import it with Access::Writable to write",
            ));
        }
        let len = match dtype {
            Some(dtype) => {
                if info.dtype != dtype {
                    return Err(Error::invalid(format!(
                        "the tensor is {}, not {dtype}",
                        info.dtype
                    )));
                }
                if !info.is_contiguous() {
                    return Err(Error::invalid(format!(
                        "strides {:?} are not C-contiguous for shape {:?}",
                        info.strides, info.shape
                    )));
                }
                info.elements()
            }
            None => {
                if info.elements() == 0 {
                    0
                } else {
                    info.nbytes as usize
                }
            }
        };
        Ok((info, len))
    }

    /// The elements as a slice, when the tensor is host memory of dtype
    /// `T` and C-contiguous.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        let (info, len) = self.host_view(Some(T::DTYPE), false)?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: host memory of `len` elements of T (dtype, contiguity and
        // size checked), aligned to at least 64 bytes, valid while the handle
        // (borrowed by the slice) is held; every bit pattern is a valid T.
        Ok(unsafe { std::slice::from_raw_parts(info.data as *const T, len) })
    }

    /// The elements as a mutable slice, when [`Tensor::as_slice`] would work
    /// and the handle is writable (owned, or imported `Writable`).
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let (info, len) = self.host_view(Some(T::DTYPE), true)?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as as_slice, and the mapping is writable; &mut self makes
        // the slice the only one through this handle.
        Ok(unsafe { std::slice::from_raw_parts_mut(info.data as *mut T, len) })
    }

    /// The `nbytes` bytes the tensor spans (any dtype, any strides), when
    /// it is host memory.
    pub fn as_bytes(&self) -> Result<&[u8]> {
        let (info, len) = self.host_view(None, false)?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: host memory of nbytes bytes, valid while the handle is held.
        Ok(unsafe { std::slice::from_raw_parts(info.data as *const u8, len) })
    }

    /// The bytes, writable, when the handle is.
    pub fn as_bytes_mut(&mut self) -> Result<&mut [u8]> {
        let (info, len) = self.host_view(None, true)?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as as_bytes, writable, exclusive through this handle.
        Ok(unsafe { std::slice::from_raw_parts_mut(info.data as *mut u8, len) })
    }

    /// The descriptor to send to another process (a shareable tensor:
    /// `NotShareable` for private memory).
    pub fn export(&self) -> Result<Descriptor> {
        let f = member!(self.ctx.plugin(), tensor_export, 1, 1)?;
        let mut out = [0u8; sys::RM_TENSOR_DESCRIPTOR_SIZE];
        // SAFETY: a live handle and an output of the descriptor's size.
        self.ctx.check(unsafe {
            f(
                self.ctx.as_raw(),
                self.raw.as_ptr(),
                out.as_mut_ptr() as *mut c_void,
                out.len() as u64,
            )
        })?;
        Ok(Descriptor(out))
    }

    /// The descriptor as printable text (`rmt1.` and base64url).
    pub fn export_text(&self) -> Result<String> {
        let f = member!(self.ctx.plugin(), tensor_export_text, 1, 1)?;
        let mut out = [0 as c_char; sys::RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        // SAFETY: a live handle and RM_TENSOR_DESCRIPTOR_TEXT_MAX bytes,
        // which always suffice.
        self.ctx.check(unsafe {
            f(
                self.ctx.as_raw(),
                self.raw.as_ptr(),
                out.as_mut_ptr(),
                out.len() as u64,
            )
        })?;
        Ok(crate::cstr_array(&out))
    }

    /// The tensor by value: an inline descriptor followed by its data, for
    /// another machine or a file (any host tensor, shared or not).
    pub fn export_inline(&self) -> Result<Vec<u8>> {
        let f = member!(self.ctx.plugin(), tensor_export_inline, 1, 1)?;
        let mut needed = 0u64;
        // SAFETY: a live handle; a NULL output asks for the size.
        let code = unsafe {
            f(
                self.ctx.as_raw(),
                self.raw.as_ptr(),
                ptr::null_mut(),
                0,
                &mut needed,
            )
        };
        if code != -15 {
            self.ctx.check(code)?;
        }
        let mut out = vec![0u8; needed as usize];
        // SAFETY: as above, with the size the plugin asked for.
        let code = unsafe {
            f(
                self.ctx.as_raw(),
                self.raw.as_ptr(),
                out.as_mut_ptr() as *mut c_void,
                out.len() as u64,
                &mut needed,
            )
        };
        self.ctx.check(code)?;
        Ok(out)
    }

    /// A DLPack `DLManagedTensor` of the data, no copy; it holds its own
    /// reference, so the handle may be dropped first.
    pub fn to_dlpack(&self) -> Result<DlPack<'ctx>> {
        let f = member!(self.ctx.plugin(), tensor_to_dlpack, 1, 1)?;
        let mut out = ptr::null_mut();
        // SAFETY: a live handle and an output.
        let code = unsafe { f(self.ctx.as_raw(), self.raw.as_ptr(), &mut out) };
        self.ctx.check(code)?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::invalid("the plugin returned no DLPack tensor"))?;
        Ok(DlPack {
            raw,
            _ctx: PhantomData,
        })
    }

    /// A DLPack 1.0 `DLManagedTensorVersioned`, with the read-only flag set
    /// for read-only views.
    pub fn to_dlpack_versioned(&self) -> Result<DlPackVersioned<'ctx>> {
        let f = member!(self.ctx.plugin(), tensor_to_dlpack_versioned, 1, 1)?;
        let mut out = ptr::null_mut();
        // SAFETY: a live handle and an output.
        let code = unsafe { f(self.ctx.as_raw(), self.raw.as_ptr(), &mut out) };
        self.ctx.check(code)?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::invalid("the plugin returned no DLPack tensor"))?;
        Ok(DlPackVersioned {
            raw,
            _ctx: PhantomData,
        })
    }
}

impl Drop for Tensor<'_> {
    fn drop(&mut self) {
        if crate::services::in_service() {
            return; // leaked: a host service must not call into the plugin
        }
        if let Ok(release) = member!(self.ctx.plugin(), tensor_release, 1, 1) {
            // SAFETY: a live handle of this context, released once; nothing
            // borrows it any more.
            unsafe { release(self.ctx.as_raw(), self.raw.as_ptr()) };
        }
    }
}

fn dl_view(t: &sys::RmDlTensor) -> (&[i64], Option<&[i64]>) {
    let ndim = t.ndim.max(0) as usize;
    if ndim == 0 {
        return (&[], None);
    }
    // SAFETY: the plugin's DLTensor has `ndim` shape entries and, when the
    // pointer is set, `ndim` strides, valid until the deleter runs; the
    // slices borrow the owning DlPack.
    unsafe {
        let shape = std::slice::from_raw_parts(t.shape, ndim);
        let strides = (!t.strides.is_null()).then(|| std::slice::from_raw_parts(t.strides, ndim));
        (shape, strides)
    }
}

/// A DLPack `DLManagedTensor` from [`Tensor::to_dlpack`]; its deleter runs
/// on `Drop` unless it was handed on with [`DlPack::into_raw`]. Borrows the
/// context, which must outlive every export.
pub struct DlPack<'ctx> {
    raw: NonNull<sys::RmDlManagedTensor>,
    _ctx: PhantomData<&'ctx Context>,
}

// SAFETY: the deleter may be called from any thread (header), and the
// struct is only read meanwhile.
unsafe impl Send for DlPack<'_> {}
// SAFETY: shared access only reads the managed tensor.
unsafe impl Sync for DlPack<'_> {}

impl DlPack<'_> {
    fn tensor(&self) -> &sys::RmDlTensor {
        // SAFETY: the managed tensor is valid until its deleter runs, which
        // only Drop does (or the consumer after into_raw, which consumes self).
        unsafe { &self.raw.as_ref().dl_tensor }
    }

    /// The data pointer (host or device).
    pub fn data(&self) -> *mut c_void {
        self.tensor().data
    }

    /// The device.
    pub fn device(&self) -> Device {
        Device::from_raw(self.tensor().device)
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        DType(self.tensor().dtype)
    }

    /// The shape.
    pub fn shape(&self) -> &[i64] {
        dl_view(self.tensor()).0
    }

    /// The strides in elements, if set.
    pub fn strides(&self) -> Option<&[i64]> {
        dl_view(self.tensor()).1
    }

    /// Hands the managed tensor to a consumer (a DLPack importer), which
    /// must call its deleter exactly once, before the context is destroyed.
    pub fn into_raw(self) -> *mut sys::RmDlManagedTensor {
        let raw = self.raw.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl Drop for DlPack<'_> {
    fn drop(&mut self) {
        if crate::services::in_service() {
            return; // leaked: a host service must not call into the plugin
        }
        // SAFETY: the plugin's managed tensor; its deleter runs exactly once,
        // here, before the borrowed context can be destroyed.
        unsafe {
            if let Some(deleter) = self.raw.as_ref().deleter {
                deleter(self.raw.as_ptr());
            }
        }
    }
}

/// A DLPack 1.0 `DLManagedTensorVersioned` from
/// [`Tensor::to_dlpack_versioned`] or [`crate::ModelHandle::to_dlpack`]
/// (1.4); deleted on `Drop` as [`DlPack`].
pub struct DlPackVersioned<'ctx> {
    raw: NonNull<sys::RmDlManagedTensorVersioned>,
    _ctx: PhantomData<&'ctx Context>,
}

// SAFETY: as for DlPack.
unsafe impl Send for DlPackVersioned<'_> {}
// SAFETY: as for DlPack.
unsafe impl Sync for DlPackVersioned<'_> {}

impl fmt::Debug for DlPackVersioned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DlPackVersioned")
            .field("data", &self.data())
            .field("device", &self.device())
            .field("dtype", &self.dtype())
            .field("shape", &self.shape())
            .field("read_only", &self.read_only())
            .finish()
    }
}

impl fmt::Debug for DlPack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DlPack")
            .field("data", &self.data())
            .field("device", &self.device())
            .field("dtype", &self.dtype())
            .field("shape", &self.shape())
            .finish()
    }
}

impl<'ctx> DlPackVersioned<'ctx> {
    /// Takes ownership of a managed tensor a member of `ctx`'s plugin made.
    pub(crate) fn from_raw(
        raw: NonNull<sys::RmDlManagedTensorVersioned>,
        _ctx: &'ctx Context,
    ) -> DlPackVersioned<'ctx> {
        DlPackVersioned {
            raw,
            _ctx: PhantomData,
        }
    }
}

impl DlPackVersioned<'_> {
    fn managed(&self) -> &sys::RmDlManagedTensorVersioned {
        // SAFETY: valid until the deleter runs, as for DlPack.
        unsafe { self.raw.as_ref() }
    }

    /// The DLPack version, `(1, 0)`.
    pub fn version(&self) -> (u32, u32) {
        (self.managed().version.major, self.managed().version.minor)
    }

    /// Whether the data must not be written (`DLPACK_FLAG_BITMASK_READ_ONLY`).
    pub fn read_only(&self) -> bool {
        self.managed().flags & sys::RM_DLPACK_FLAG_READ_ONLY != 0
    }

    /// The data pointer (host or device).
    pub fn data(&self) -> *mut c_void {
        self.managed().dl_tensor.data
    }

    /// The device.
    pub fn device(&self) -> Device {
        Device::from_raw(self.managed().dl_tensor.device)
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        DType(self.managed().dl_tensor.dtype)
    }

    /// The shape.
    pub fn shape(&self) -> &[i64] {
        dl_view(&self.managed().dl_tensor).0
    }

    /// The strides in elements, if set.
    pub fn strides(&self) -> Option<&[i64]> {
        dl_view(&self.managed().dl_tensor).1
    }

    /// The bytes of a read-only host tensor stored without gaps (row-major
    /// strides or none), such as a model's weights from
    /// [`crate::ModelHandle::to_dlpack`]; `None` for device memory, a
    /// writable tensor (other handles may write it meanwhile) or a strided
    /// layout.
    pub fn host_bytes(&self) -> Option<&[u8]> {
        let tensor = &self.managed().dl_tensor;
        if !self.read_only() || self.device() != Device::Cpu {
            return None;
        }
        let (shape, strides) = dl_view(tensor);
        if let Some(strides) = strides {
            let mut expected = 1i64;
            for (&size, &stride) in shape.iter().zip(strides).rev() {
                if size != 1 && stride != expected {
                    return None;
                }
                expected = expected.checked_mul(size)?;
            }
        }
        let mut elements = 1usize;
        for &size in shape {
            elements = elements.checked_mul(usize::try_from(size).ok()?)?;
        }
        let len = elements.checked_mul(self.dtype().element_bytes())?;
        if len == 0 {
            return Some(&[]);
        }
        if tensor.data.is_null() {
            return None;
        }
        // SAFETY: a read-only host tensor of `len` contiguous bytes from
        // data + byte_offset, valid and unchanged until the deleter runs,
        // which only Drop does; the slice borrows self.
        Some(unsafe {
            std::slice::from_raw_parts(
                (tensor.data as *const u8).add(tensor.byte_offset as usize),
                len,
            )
        })
    }

    /// Hands the managed tensor to a consumer, as [`DlPack::into_raw`].
    pub fn into_raw(self) -> *mut sys::RmDlManagedTensorVersioned {
        let raw = self.raw.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl Drop for DlPackVersioned<'_> {
    fn drop(&mut self) {
        if crate::services::in_service() {
            return; // leaked: a host service must not call into the plugin
        }
        // SAFETY: as for DlPack.
        unsafe {
            if let Some(deleter) = self.raw.as_ref().deleter {
                deleter(self.raw.as_ptr());
            }
        }
    }
}

/// A context's pool counters (`rm_tensor_pool_stats`); the `cuda_*`
/// fields are 1.3 (zero from an older plugin).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// The pool's data segment, "" until the first shared allocation.
    pub pool_name: String,
    /// The pool's id.
    pub pool_id: u64,
    /// `shm.pool_bytes`.
    pub pool_bytes: u64,
    /// Shared tensors not yet freed.
    pub live_tensors: u64,
    /// Their bytes.
    pub live_bytes: u64,
    /// /dev/shm bytes held now.
    pub committed_bytes: u64,
    /// Live private (fallback) tensors.
    pub heap_tensors: u64,
    /// Their bytes.
    pub heap_bytes: u64,
    /// Allocations since creation.
    pub allocations: u64,
    /// Allocations that fell back to the heap.
    pub fallbacks: u64,
    /// Shared tensors freed.
    pub frees: u64,
    /// Frees another context's release caused.
    pub remote_releases: u64,
    /// Importing contexts registered now.
    pub holders: u64,
    /// Dead holders reclaimed.
    pub dead_holders_reclaimed: u64,
    /// Holds dropped for dead holders.
    pub holds_reclaimed: u64,
    /// Successful imports in this context.
    pub imports: u64,
    /// Other pools this context maps now.
    pub pools_mapped: u64,
    /// Dead owners' segments unlinked at context creation.
    pub startup_segments_unlinked: u64,
    /// Their bytes.
    pub startup_bytes_unlinked: u64,
    /// Live device tensors this context allocated (1.3).
    pub cuda_tensors: u64,
    /// Their bytes (1.3).
    pub cuda_bytes: u64,
    /// Exportable device blocks held (1.3).
    pub cuda_blocks: u64,
    /// Their bytes, against `cuda.pool_bytes` (1.3).
    pub cuda_block_bytes: u64,
    /// IPC handles opened (1.3).
    pub cuda_handles_opened: u64,
    /// IPC handles open now (1.3).
    pub cuda_handles_open: u64,
    /// Imports served by an open handle (1.3).
    pub cuda_handle_cache_hits: u64,
    /// Blocks of destroyed contexts still held by importers (1.3).
    pub cuda_blocks_orphaned: u64,
}

/// What [`Context::reclaim_tensors`] did (`rm_reclaim_report`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReclaimReport {
    /// Importing contexts of dead processes dropped.
    pub dead_holders: u64,
    /// Their holds on this context's tensors.
    pub holds_dropped: u64,
    /// Tensors freed as a result.
    pub tensors_freed: u64,
    /// Dead owners' segments unlinked.
    pub segments_unlinked: u64,
    /// Their bytes.
    pub bytes_unlinked: u64,
    /// Cached IPC handles closed (1.3).
    pub cuda_handles_closed: u64,
    /// Device blocks freed (1.3).
    pub cuda_blocks_freed: u64,
}

/// What a [`ShmPoolInfo`] row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Memory {
    /// A shared-memory pool.
    Shm,
    /// A device table (1.3).
    Cuda,
}

/// One pool of the namespace (`rm_shm_pool_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmPoolInfo {
    /// The data segment's name.
    pub name: String,
    /// The pool's id.
    pub pool_id: u64,
    /// The owner's pid.
    pub owner_pid: u32,
    /// Whether the owner is alive (pid and start time).
    pub owner_alive: bool,
    /// The owner's start time (clock ticks since boot).
    pub owner_start_time: u64,
    /// `shm.pool_bytes` (device tables: `cuda.pool_bytes`).
    pub pool_bytes: u64,
    /// Bytes allocated now.
    pub committed_bytes: u64,
    /// Live tensors.
    pub live_tensors: u64,
    /// Their bytes.
    pub live_bytes: u64,
    /// Importing contexts.
    pub holders: u32,
    /// Whether the control segment could be read (else only name, id,
    /// owner are set).
    pub readable: bool,
    /// Pool or device table (1.3; `Shm` from an older plugin).
    pub memory: Memory,
    /// Device tables: exportable blocks (1.3).
    pub device_blocks: u32,
}
