//! Element types of `torch.save` storages: the typed storage classes its pickle names.

use crate::wire::dtype::WireDtype;

/// The element type of a storage, one per typed storage class `torch.save` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageDtype {
    /// `torch.float64` (`DoubleStorage`).
    F64,
    /// `torch.float32` (`FloatStorage`).
    F32,
    /// `torch.float16` (`HalfStorage`).
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`).
    Bf16,
    /// `torch.int64` (`LongStorage`).
    I64,
    /// `torch.int32` (`IntStorage`).
    I32,
    /// `torch.int16` (`ShortStorage`).
    I16,
    /// `torch.int8` (`CharStorage`).
    I8,
    /// `torch.uint8` (`ByteStorage`).
    U8,
    /// `torch.bool` (`BoolStorage`).
    Bool,
}

impl StorageDtype {
    /// Every dtype, for tests and fixtures.
    pub const ALL: [StorageDtype; 10] = [
        StorageDtype::F64,
        StorageDtype::F32,
        StorageDtype::F16,
        StorageDtype::Bf16,
        StorageDtype::I64,
        StorageDtype::I32,
        StorageDtype::I16,
        StorageDtype::I8,
        StorageDtype::U8,
        StorageDtype::Bool,
    ];

    /// The dtype of storage class `torch.<class>`, if it is one we read.
    pub fn from_storage_class(class: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.storage_class() == class)
    }

    /// The storage class's name in the `torch` module.
    pub fn storage_class(self) -> &'static str {
        match self {
            StorageDtype::F64 => "DoubleStorage",
            StorageDtype::F32 => "FloatStorage",
            StorageDtype::F16 => "HalfStorage",
            StorageDtype::Bf16 => "BFloat16Storage",
            StorageDtype::I64 => "LongStorage",
            StorageDtype::I32 => "IntStorage",
            StorageDtype::I16 => "ShortStorage",
            StorageDtype::I8 => "CharStorage",
            StorageDtype::U8 => "ByteStorage",
            StorageDtype::Bool => "BoolStorage",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F64 | StorageDtype::I64 => 8,
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F16 | StorageDtype::Bf16 | StorageDtype::I16 => 2,
            StorageDtype::I8 | StorageDtype::U8 | StorageDtype::Bool => 1,
        }
    }

    /// The same dtype's name in a safetensors header, so decoded tensors share one description.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            StorageDtype::F64 => "F64",
            StorageDtype::F32 => "F32",
            StorageDtype::F16 => "F16",
            StorageDtype::Bf16 => "BF16",
            StorageDtype::I64 => "I64",
            StorageDtype::I32 => "I32",
            StorageDtype::I16 => "I16",
            StorageDtype::I8 => "I8",
            StorageDtype::U8 => "U8",
            StorageDtype::Bool => "BOOL",
        }
    }
}

impl From<WireDtype> for StorageDtype {
    fn from(dtype: WireDtype) -> Self {
        match dtype {
            WireDtype::Bf16 => StorageDtype::Bf16,
            WireDtype::Fp32 => StorageDtype::F32,
        }
    }
}
