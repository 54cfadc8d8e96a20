//! A pickle reader that understands exactly what `torch.save` writes for a flat
//! `Dict[str, Tensor]`, and nothing more.
//!
//! It is not an interpreter: there is no way to name or call anything outside a fixed list.
//! Opcodes outside the list below are refused by name (so no bytes objects, lists, sets,
//! `INST`/`OBJ`/`NEWOBJ`, extension codes or out-of-band buffers, which is where nested
//! pickles and gadget chains live), and `GLOBAL`/`STACK_GLOBAL` resolve only
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`
//! and the typed storage classes, the subset of `torch.load(weights_only=True)`'s allowlist that
//! such a dict uses. Every other global (`os.system`, `builtins.eval`, …) is refused by name when
//! it is *named*, before anything could call it.
//!
//! Objects live in one arena indexed by position, so memo references are cheap copies, a
//! self-referencing dict is harmless, and the memory used is bounded by the pickle's length
//! (every opcode adds at most one object, built from bytes or stack items it consumes).

use std::collections::HashMap;

use super::TorchSaveError;
use super::dtype::StorageDtype;
use super::opcodes as op;

/// Longest module or attribute name in a `GLOBAL` (the allowed ones are under 40 bytes).
const MAX_GLOBAL_NAME: usize = 256;
/// Longest storage key (`torch.save` numbers them: `0`, `1`, …).
const MAX_STORAGE_KEY: usize = 64;

/// A storage the pickle refers to by persistent id: a record `data/<key>` of `numel` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    /// Element type (from the storage class, e.g. `torch.BFloat16Storage`).
    pub dtype: StorageDtype,
    /// Record key: the data lives in `<archive>/data/<key>`.
    pub key: String,
    /// Elements in the storage, as the pickle claims them (checked against the record).
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorView {
    /// The storage it views.
    pub storage: StorageRef,
    /// Index of its first element in the storage.
    pub offset: u64,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its stride per dimension, in elements.
    pub stride: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Object(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageDtype),
}

#[derive(Debug)]
enum Object {
    Str(String),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorView),
}

fn malformed(problem: impl Into<String>) -> TorchSaveError {
    TorchSaveError::Pickle(problem.into())
}

/// Reads `data.pkl` into `(name, tensor)` pairs in the dict's order, holding at most
/// `max_values` objects, stack entries and memo entries together (each takes a few dozen
/// bytes, so a pickle of one-byte opcodes cannot make us hold fifty times its size).
pub fn unpickle(
    pickle: &[u8],
    max_values: usize,
) -> Result<Vec<(String, TensorView)>, TorchSaveError> {
    let mut machine = Machine {
        max_values,
        pickle,
        position: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
    };
    let result = machine.run()?;
    machine.state_dict(result)
}

struct Machine<'a> {
    max_values: usize,
    pickle: &'a [u8],
    position: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
}

impl Machine<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], TorchSaveError> {
        let bytes = self
            .position
            .checked_add(len)
            .and_then(|end| self.pickle.get(self.position..end))
            .ok_or_else(|| {
                malformed(format!("ends inside an argument at byte {}", self.position))
            })?;
        self.position += len;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, TorchSaveError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TorchSaveError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TorchSaveError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A text line (for `GLOBAL`), at most [`MAX_GLOBAL_NAME`] bytes.
    fn line(&mut self) -> Result<String, TorchSaveError> {
        let rest = &self.pickle[self.position.min(self.pickle.len())..];
        let len = rest
            .iter()
            .take(MAX_GLOBAL_NAME + 1)
            .position(|b| *b == b'\n')
            .ok_or_else(|| malformed("a GLOBAL name is unterminated or too long"))?;
        let line = std::str::from_utf8(&rest[..len])
            .map_err(|_| malformed("a GLOBAL name is not UTF-8"))?
            .to_string();
        self.position += len + 1;
        Ok(line)
    }

    fn push_object(&mut self, object: Object) {
        self.objects.push(object);
        self.stack.push(Value::Object(self.objects.len() - 1));
    }

    fn pop(&mut self) -> Result<Value, TorchSaveError> {
        self.stack
            .pop()
            .ok_or_else(|| malformed(format!("stack underflow at byte {}", self.position)))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, TorchSaveError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| malformed(format!("no MARK before byte {}", self.position)))?;
        if mark > self.stack.len() {
            return Err(malformed("a MARK points past the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn object(&self, value: Value) -> Option<&Object> {
        match value {
            Value::Object(index) => self.objects.get(index),
            _ => None,
        }
    }

    fn string(&mut self, len: usize) -> Result<(), TorchSaveError> {
        // `take` checks the length against the bytes left before anything is allocated.
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| malformed("a string is not UTF-8"))?
            .to_string();
        self.push_object(Object::Str(text));
        Ok(())
    }

    fn memoize(&mut self, index: u32) -> Result<(), TorchSaveError> {
        let top = *self
            .stack
            .last()
            .ok_or_else(|| malformed("memoizing an empty stack"))?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn recall(&mut self, index: u32) -> Result<(), TorchSaveError> {
        let value = *self
            .memo
            .get(&index)
            .ok_or_else(|| malformed(format!("memo entry {index} was never stored")))?;
        self.stack.push(value);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, TorchSaveError> {
        loop {
            let at = self.position;
            if self.objects.len() + self.stack.len() + self.memo.len() + self.marks.len()
                > self.max_values
            {
                return Err(malformed(format!(
                    "more than {} values at byte {at} (a state dict needs about ten per tensor)",
                    self.max_values
                )));
            }
            let opcode = *self
                .pickle
                .get(at)
                .ok_or_else(|| malformed("ends without STOP"))?;
            self.position += 1;
            match opcode {
                op::PROTO => {
                    let version = self.u8()?;
                    if !(2..=5).contains(&version) {
                        return Err(malformed(format!(
                            "pickle protocol {version} (2 to 5 are read)"
                        )));
                    }
                }
                op::FRAME => {
                    // Protocol 4 framing is only a read-ahead hint.
                    self.take(8)?;
                }
                op::STOP => return self.pop(),
                op::MARK => self.marks.push(self.stack.len()),
                op::EMPTY_DICT => self.push_object(Object::Dict(Vec::new())),
                op::EMPTY_TUPLE => self.push_object(Object::Tuple(Vec::new())),
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_object(Object::Tuple(items));
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(opcode - op::TUPLE1 + 1);
                    if self.stack.len() < n {
                        return Err(malformed(format!("stack underflow at byte {at}")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_object(Object::Tuple(items));
                }
                op::BINUNICODE => {
                    let len = self.u32()? as usize;
                    self.string(len)?;
                }
                op::SHORT_BINUNICODE => {
                    let len = usize::from(self.u8()?);
                    self.string(len)?;
                }
                op::BININT => {
                    let b = self.take(4)?;
                    let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                op::BININT2 => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                op::LONG1 => {
                    let len = usize::from(self.u8()?);
                    if len > 8 {
                        return Err(malformed(format!(
                            "a {len}-byte integer at byte {at} (at most 8 bytes are read)"
                        )));
                    }
                    let bytes = self.take(len)?;
                    // Little-endian two's complement, sign-extended from its top byte.
                    let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut full = [fill; 8];
                    full[..len].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(full)));
                }
                op::NONE => self.stack.push(Value::None),
                op::NEWTRUE => self.stack.push(Value::Bool(true)),
                op::NEWFALSE => self.stack.push(Value::Bool(false)),
                op::BINPUT => {
                    let index = u32::from(self.u8()?);
                    self.memoize(index)?;
                }
                op::LONG_BINPUT => {
                    let index = self.u32()?;
                    self.memoize(index)?;
                }
                op::MEMOIZE => {
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| malformed("too many memo entries"))?;
                    self.memoize(index)?;
                }
                op::BINGET => {
                    let index = u32::from(self.u8()?);
                    self.recall(index)?;
                }
                op::LONG_BINGET => {
                    let index = self.u32()?;
                    self.recall(index)?;
                }
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let global = resolve_global(&module, &name)?;
                    self.push_object(Object::Global(global));
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(Object::Str(module)), Some(Object::Str(name))) =
                        (self.object(module), self.object(name))
                    else {
                        return Err(malformed(format!(
                            "STACK_GLOBAL at byte {at} without two strings"
                        )));
                    };
                    let global = resolve_global(module, name)?;
                    self.push_object(Object::Global(global));
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let storage = self.persistent_storage(pid)?;
                    self.push_object(Object::Storage(storage));
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let object = self.call(callable, args, at)?;
                    self.push_object(object);
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value], at)?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    self.set_items(items, at)?;
                }
                op::BUILD => {
                    // `OrderedDict` state (a `state_dict()`'s `_metadata`): accepted, ignored.
                    let state = self.pop()?;
                    let target = *self
                        .stack
                        .last()
                        .ok_or_else(|| malformed("BUILD on an empty stack"))?;
                    let state_ok = matches!(state, Value::None)
                        || matches!(self.object(state), Some(Object::Dict(_)));
                    if !state_ok || !matches!(self.object(target), Some(Object::Dict(_))) {
                        return Err(malformed(format!(
                            "BUILD at byte {at} sets state on something other than a dict"
                        )));
                    }
                }
                other => {
                    return Err(TorchSaveError::RefusedOpcode {
                        opcode: op::name(other).map_or_else(
                            || format!("0x{other:02x} (no pickle opcode)"),
                            str::to_string,
                        ),
                        position: at,
                    });
                }
            }
        }
    }

    fn set_items(&mut self, items: Vec<Value>, at: usize) -> Result<(), TorchSaveError> {
        if !items.len().is_multiple_of(2) {
            return Err(malformed(format!(
                "odd number of items for SETITEMS at byte {at}"
            )));
        }
        let target = *self
            .stack
            .last()
            .ok_or_else(|| malformed("SETITEM on an empty stack"))?;
        let Value::Object(index) = target else {
            return Err(malformed(format!(
                "SETITEM at byte {at} on something other than a dict"
            )));
        };
        let Some(Object::Dict(entries)) = self.objects.get_mut(index) else {
            return Err(malformed(format!(
                "SETITEM at byte {at} on something other than a dict"
            )));
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            entries.push((key, value));
        }
        Ok(())
    }

    /// `('storage', <storage class>, key, location, numel)`, as torch.save's `persistent_id`.
    fn persistent_storage(&self, pid: Value) -> Result<StorageRef, TorchSaveError> {
        let bad = || malformed("a persistent id is not ('storage', class, key, location, numel)");
        let Some(Object::Tuple(fields)) = self.object(pid) else {
            return Err(bad());
        };
        let [tag, class, key, location, numel] = fields.as_slice() else {
            return Err(bad());
        };
        let (
            Some(Object::Str(tag)),
            Some(Object::Global(Global::Storage(dtype))),
            Some(Object::Str(key)),
            Some(Object::Str(_location)),
            Value::Int(numel),
        ) = (
            self.object(*tag),
            self.object(*class),
            self.object(*key),
            self.object(*location),
            *numel,
        )
        else {
            return Err(bad());
        };
        if tag != "storage" {
            return Err(bad());
        }
        let plain = !key.is_empty()
            && key.len() <= MAX_STORAGE_KEY
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(malformed(format!(
                "storage key {key:?} is not a plain record name"
            )));
        }
        let numel = u64::try_from(numel)
            .map_err(|_| malformed(format!("storage {key} has {numel} elements")))?;
        Ok(StorageRef {
            dtype: *dtype,
            key: key.clone(),
            numel,
        })
    }

    fn call(&self, callable: Value, args: Value, at: usize) -> Result<Object, TorchSaveError> {
        let Some(Object::Global(global)) = self.object(callable) else {
            return Err(malformed(format!(
                "REDUCE at byte {at} calls something that is not a global"
            )));
        };
        let Some(Object::Tuple(args)) = self.object(args) else {
            return Err(malformed(format!(
                "REDUCE at byte {at} without an argument tuple"
            )));
        };
        match global {
            Global::OrderedDict if args.is_empty() => Ok(Object::Dict(Vec::new())),
            Global::RebuildTensorV2 => self.rebuild_tensor(args).map(Object::Tensor),
            Global::RebuildParameter => match args.first().and_then(|a| self.object(*a)) {
                Some(Object::Tensor(tensor)) if args.len() == 3 => {
                    Ok(Object::Tensor(tensor.clone()))
                }
                _ => Err(malformed(
                    "_rebuild_parameter takes (tensor, requires_grad, hooks)",
                )),
            },
            Global::OrderedDict => Err(malformed(
                "OrderedDict is only ever called with no arguments",
            )),
            Global::Storage(dtype) => Err(TorchSaveError::RefusedGlobal(format!(
                "{} called as a function (storages are only read by persistent id)",
                dtype.storage_class()
            ))),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<TensorView, TorchSaveError> {
        let bad = |what: &str| malformed(format!("_rebuild_tensor_v2: {what}"));
        if !(6..=7).contains(&args.len()) {
            return Err(bad("takes 6 or 7 arguments"));
        }
        let Some(Object::Storage(storage)) = self.object(args[0]) else {
            return Err(bad("the first argument is not a storage"));
        };
        let Value::Int(offset) = args[1] else {
            return Err(bad("the storage offset is not an integer"));
        };
        let offset = u64::try_from(offset).map_err(|_| bad("negative storage offset"))?;
        let shape = self
            .unsigned_tuple(args[2])
            .ok_or_else(|| bad("the size is not a tuple of non-negative integers"))?;
        let stride = self
            .unsigned_tuple(args[3])
            .ok_or_else(|| bad("the stride is not a tuple of non-negative integers"))?;
        if shape.len() != stride.len() {
            return Err(bad("size and stride have different lengths"));
        }
        if !matches!(args[4], Value::Bool(_)) {
            return Err(bad("requires_grad is not a bool"));
        }
        // Backward hooks would be code to run; torch.save writes an empty OrderedDict.
        if !matches!(self.object(args[5]), Some(Object::Dict(hooks)) if hooks.is_empty()) {
            return Err(bad("backward hooks are not an empty dict"));
        }
        if let Some(metadata) = args.get(6)
            && !matches!(metadata, Value::None)
            && !matches!(self.object(*metadata), Some(Object::Dict(_)))
        {
            return Err(bad("metadata is not a dict"));
        }
        Ok(TensorView {
            storage: storage.clone(),
            offset,
            shape,
            stride,
        })
    }

    fn unsigned_tuple(&self, value: Value) -> Option<Vec<u64>> {
        let Some(Object::Tuple(items)) = self.object(value) else {
            return None;
        };
        items
            .iter()
            .map(|v| match v {
                Value::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    }

    /// The pickle's result as a state dict: a dict of string keys to tensors, no duplicates.
    fn state_dict(&self, result: Value) -> Result<Vec<(String, TensorView)>, TorchSaveError> {
        let Some(Object::Dict(entries)) = self.object(result) else {
            return Err(malformed("the pickle does not hold a dict"));
        };
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        let mut tensors = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(Object::Str(name)) = self.object(*key) else {
                return Err(malformed("a dict key is not a string"));
            };
            let Some(Object::Tensor(tensor)) = self.object(*value) else {
                return Err(malformed(format!("the value of {name:?} is not a tensor")));
            };
            if !seen.insert(name.as_str()) {
                return Err(malformed(format!("{name:?} appears twice")));
            }
            tensors.push((name.clone(), tensor.clone()));
        }
        Ok(tensors)
    }
}

/// The allowlist: what a `torch.save`d state dict names, and nothing else.
fn resolve_global(module: &str, name: &str) -> Result<Global, TorchSaveError> {
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", class) => StorageDtype::from_storage_class(class)
            .map(Global::Storage)
            .ok_or_else(|| refused(module, name)),
        _ => Err(refused(module, name)),
    }
}

/// The refusal naming `module.name` as the uploader wrote it, escaped and cut to
/// [`MAX_GLOBAL_NAME`] characters each: a `STACK_GLOBAL`'s strings are any length and may hold
/// newlines, and this text reaches the 415 body, the logs and the audit log.
fn refused(module: &str, name: &str) -> TorchSaveError {
    let shown = |text: &str| -> String {
        let escaped: String = text.escape_debug().take(MAX_GLOBAL_NAME).collect();
        if escaped.len() < text.escape_debug().count() {
            format!("{escaped}…")
        } else {
            escaped
        }
    };
    TorchSaveError::RefusedGlobal(format!("{}.{}", shown(module), shown(name)))
}
