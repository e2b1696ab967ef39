//! Checks that the SEH copy shim kept its exception handler in the linked driver image.
//!
//! clang drops a `__try` whose body faults inline; then the shim's functions have unwind
//! info without `UNW_FLAG_EHANDLER`, and a bad user pointer bug-checks the machine instead
//! of returning STATUS_ACCESS_VIOLATION (DESIGN.md section 3). This module reads the
//! image's exception directory (`.pdata`, an array of `RUNTIME_FUNCTION`) and each
//! function's `UNWIND_INFO` (x64 exception handling, "struct UNWIND_INFO" in Microsoft's
//! x64 ABI documentation) and requires, for each shim routine:
//! - `UNW_FLAG_EHANDLER` set;
//! - the handler RVA is an import thunk (`jmp [rip+disp32]`, bytes `FF 25`) whose IAT slot
//!   is `__C_specific_handler` imported from `ntoskrnl.exe`;
//! - the `__C_specific_handler` scope table has at least one `__except` entry (filter
//!   function and jump target set) inside the function.
//!
//! The routines are found through the linker map that build.rs asks rust-lld to write.

use std::collections::HashMap;

use object::pe;
use object::read::pe::PeFile64;
use object::LittleEndian as LE;

use crate::pe::PeReport;

/// `UNW_FLAG_EHANDLER`: the function has an exception handler.
const UNW_FLAG_EHANDLER: u8 = 0x1;
/// `UNW_FLAG_CHAININFO`: the unwind info continues in a chained `RUNTIME_FUNCTION`.
const UNW_FLAG_CHAININFO: u8 = 0x4;

/// What was verified for one shim routine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerCheck {
    /// Routine name from the map, e.g. `fg_copy_from_user`.
    pub function: String,
    /// `RUNTIME_FUNCTION.BeginAddress` (RVA).
    pub begin: u32,
    /// `RUNTIME_FUNCTION.EndAddress` (RVA, exclusive).
    pub end: u32,
    /// RVA of the handler thunk.
    pub handler_rva: u32,
    /// DLL and name the thunk jumps to, e.g. `ntoskrnl.exe!__C_specific_handler`.
    pub handler_import: String,
    /// Number of `__C_specific_handler` scope-table entries.
    pub scope_count: u32,
}

/// Why an unwind check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwindError {
    /// The map has no such symbol.
    #[error("symbol {0} is not in the linker map")]
    NotInMap(String),
    /// The image could not be parsed.
    #[error("image: {0}")]
    Image(String),
    /// No `RUNTIME_FUNCTION` covers the routine: it is a leaf function without unwind
    /// info, so it has no exception handler either.
    #[error("{0}: no RUNTIME_FUNCTION entry in .pdata (no unwind info, so no __except handler)")]
    NoRuntimeFunction(String),
    /// The unwind info has no exception handler.
    #[error("{0}: UNWIND_INFO has no UNW_FLAG_EHANDLER (the __try was dropped)")]
    NoHandler(String),
    /// The handler is not the ntoskrnl `__C_specific_handler`.
    #[error(
        "{function}: exception handler is {found}, expected ntoskrnl.exe!__C_specific_handler"
    )]
    WrongHandler {
        /// The routine.
        function: String,
        /// What the handler resolves to.
        found: String,
    },
    /// The scope table is empty or malformed.
    #[error("{0}: __C_specific_handler scope table has no __except entry inside the function")]
    NoScope(String),
    /// Truncated data.
    #[error("{0}: unwind data out of bounds")]
    OutOfBounds(String),
}

/// Symbols of an lld-link `/MAP` file: name -> RVA.
#[derive(Debug, Clone, Default)]
pub struct LinkerMap {
    symbols: HashMap<String, u64>,
    image_base: u64,
}

impl LinkerMap {
    /// Parses an lld-link map. Symbol lines look like
    /// ` 0001:00000630       fg_copy_from_user    0000000180001630     lib:object`
    /// (section:offset, name, Rva+Base, origin); `image_base` converts Rva+Base to RVAs.
    pub fn parse(text: &str, image_base: u64) -> Self {
        let mut symbols = HashMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [section_offset, name, address, ..] = fields.as_slice() {
                if !section_offset.contains(':') || address.len() != 16 {
                    continue;
                }
                if let Ok(va) = u64::from_str_radix(address, 16) {
                    symbols.insert((*name).to_owned(), va);
                }
            }
        }
        LinkerMap {
            symbols,
            image_base,
        }
    }

    /// The RVA of `name`.
    pub fn rva(&self, name: &str) -> Option<u32> {
        let va = self.symbols.get(name)?;
        u32::try_from(va.checked_sub(self.image_base)?).ok()
    }
}

/// The image base from the optional header.
///
/// # Errors
/// [`UnwindError::Image`] if the file is not a PE32+ image.
pub fn image_base(image: &[u8]) -> Result<u64, UnwindError> {
    use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
    let file = PeFile64::parse(image).map_err(|e| UnwindError::Image(e.to_string()))?;
    Ok(file.nt_headers().optional_header().image_base())
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let slice = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(slice.try_into().ok()?))
}

/// Checks the unwind info of each routine in `functions` (names looked up in `map`).
///
/// # Errors
/// The first [`UnwindError`] found.
pub fn check_seh_handlers(
    image: &[u8],
    report: &PeReport,
    map: &LinkerMap,
    functions: &[&str],
) -> Result<Vec<HandlerCheck>, UnwindError> {
    let file = PeFile64::parse(image).map_err(|e| UnwindError::Image(e.to_string()))?;
    let sections = file.section_table();
    let at = |rva: u32| sections.pe_data_at(image, rva);
    // No exception directory at all (every function a leaf) means no handlers either.
    let mut entries: Vec<(u32, u32, u32)> = Vec::new();
    if let Some(pdata_dir) = file.data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION) {
        let pdata_rva = pdata_dir.virtual_address.get(LE);
        let pdata_len = pdata_dir.size.get(LE) as usize;
        let pdata = at(pdata_rva)
            .and_then(|data| data.get(..pdata_len))
            .ok_or_else(|| UnwindError::Image("exception directory out of bounds".to_owned()))?;
        entries = pdata
            .chunks_exact(12)
            .filter_map(|entry| {
                Some((
                    read_u32(entry, 0)?,
                    read_u32(entry, 4)?,
                    read_u32(entry, 8)?,
                ))
            })
            .collect();
    }

    let mut checks = Vec::new();
    for &function in functions {
        let name = function.to_owned();
        let rva = map
            .rva(function)
            .ok_or_else(|| UnwindError::NotInMap(name.clone()))?;
        let &(begin, end, mut unwind_rva) = entries
            .iter()
            .find(|(begin, end, _)| *begin <= rva && rva < *end)
            .ok_or_else(|| UnwindError::NoRuntimeFunction(name.clone()))?;
        let out_of_bounds = || UnwindError::OutOfBounds(name.clone());
        // Follow chained unwind info to the primary entry, which carries the handler.
        let (flags, info) = loop {
            let info = at(unwind_rva).ok_or_else(out_of_bounds)?;
            let header = *info.first().ok_or_else(out_of_bounds)?;
            let flags = header >> 3;
            let code_count = usize::from(*info.get(2).ok_or_else(out_of_bounds)?);
            let tail = 4 + 2 * (code_count + (code_count & 1));
            if flags & UNW_FLAG_CHAININFO != 0 {
                unwind_rva = read_u32(info, tail + 8).ok_or_else(out_of_bounds)?;
                continue;
            }
            break (flags, info.get(tail..).ok_or_else(out_of_bounds)?);
        };
        if flags & UNW_FLAG_EHANDLER == 0 {
            return Err(UnwindError::NoHandler(name));
        }
        let handler_rva = read_u32(info, 0).ok_or_else(out_of_bounds)?;
        let thunk = at(handler_rva).ok_or_else(out_of_bounds)?;
        let handler_import = match thunk {
            [0xFF, 0x25, d0, d1, d2, d3, ..] => {
                let displacement = i32::from_le_bytes([*d0, *d1, *d2, *d3]);
                let slot = handler_rva
                    .wrapping_add(6)
                    .wrapping_add_signed(displacement);
                report
                    .import_at_iat(slot)
                    .map(|import| format!("{}!{}", import.dll, import.symbol))
                    .unwrap_or_else(|| format!("unknown IAT slot 0x{slot:X}"))
            }
            _ => format!("code at RVA 0x{handler_rva:X} (not an import thunk)"),
        };
        if handler_import != "ntoskrnl.exe!__C_specific_handler" {
            return Err(UnwindError::WrongHandler {
                function: name,
                found: handler_import,
            });
        }
        let scope_count = read_u32(info, 4).ok_or_else(out_of_bounds)?;
        let has_except_scope = (0..scope_count as usize).any(|index| {
            let base = 8 + index * 16;
            matches!(
                (
                    read_u32(info, base),
                    read_u32(info, base + 4),
                    read_u32(info, base + 8),
                    read_u32(info, base + 12),
                ),
                (Some(scope_begin), Some(scope_end), Some(filter), Some(target))
                    if begin <= scope_begin && scope_end <= end && filter > 1 && target != 0
            )
        });
        if !has_except_scope {
            return Err(UnwindError::NoScope(name));
        }
        checks.push(HandlerCheck {
            function: name,
            begin,
            end,
            handler_rva,
            handler_import,
            scope_count,
        });
    }
    Ok(checks)
}

/// From `llvm-readobj --unwind` output, the handler address (VA) printed for the
/// `RuntimeFunction` whose `StartAddress` is `start_va`; `None` if that function has no
/// handler line. Used as an independent cross-check of [`check_seh_handlers`].
pub fn readobj_handler_va(readobj_output: &str, start_va: u64) -> Option<u64> {
    let wanted = format!("(0x{start_va:X})");
    readobj_output
        .split("RuntimeFunction {")
        .skip(1)
        .find(|block| {
            block.lines().any(|line| {
                let line = line.trim();
                line.starts_with("StartAddress:") && line.ends_with(&wanted)
            })
        })?
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("Handler:")?;
            let open = rest.rfind("(0x")?;
            let hex = rest[open + 3..].strip_suffix(')')?;
            u64::from_str_radix(hex, 16).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_symbols_resolve_to_rvas() {
        let map = LinkerMap::parse(
            "  Address  Size  Align Out In Symbol\n \
             0001:00000630       fg_copy_from_user          0000000180001630     seh_shim:x.o\n",
            0x1_8000_0000,
        );
        assert_eq!(map.rva("fg_copy_from_user"), Some(0x1630));
        assert_eq!(map.rva("missing"), None);
    }

    #[test]
    fn readobj_handler_is_found_per_function() {
        let text =
            "UnwindInformation [\n  RuntimeFunction {\n    StartAddress: (0x180001000)\n  }\n  \
                    RuntimeFunction {\n    StartAddress: (0x180001630)\n    UnwindInfo {\n      \
                    Handler: (0x180001860)\n    }\n  }\n]\n";
        assert_eq!(readobj_handler_va(text, 0x1_8000_1630), Some(0x1_8000_1860));
        assert_eq!(readobj_handler_va(text, 0x1_8000_1000), None);
    }
}
