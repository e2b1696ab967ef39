//! The PE gate: structural checks of a kernel-driver image (`flushguard.sys`) with a real
//! PE parser (the `object` crate), run by `cargo xtask package` before signing.
//!
//! A driver image must be PE32+ for AMD64 (`IMAGE_FILE_MACHINE_AMD64`, 0x8664), use
//! `IMAGE_SUBSYSTEM_NATIVE` (1), start at the exported `DriverEntry`, and import only from
//! `ntoskrnl.exe` and `FLTMGR.SYS` (DESIGN.md section 3, "Link trap": windows-sys links
//! some kernel routines to `ntdll.dll`, which the kernel loader cannot satisfy, so such an
//! image fails to load with STATUS_PROCEDURE_NOT_FOUND / STATUS_DLL_NOT_FOUND). It must
//! also import the Filter Manager routines that prove it really registers.

use std::fmt;

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::LittleEndian as LE;

/// DLLs a FlushGuard driver image may import from (compared case-insensitively).
pub const ALLOWED_DLLS: &[&str] = &["ntoskrnl.exe", "FLTMGR.SYS"];

/// Imports the driver image must contain: the Filter Manager routines of registration,
/// the port's lifetime, and the SEH runtime the copy shim needs.
pub const REQUIRED_IMPORTS: &[&str] = &[
    "FltRegisterFilter",
    "FltStartFiltering",
    "FltUnregisterFilter",
    "FltCreateCommunicationPort",
    "FltCloseCommunicationPort",
    "FltBuildDefaultSecurityDescriptor",
    "__C_specific_handler",
];

/// One imported routine: the DLL it comes from and its name (or `#ordinal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// DLL name as written in the import descriptor, e.g. `fltmgr.sys`.
    pub dll: String,
    /// Routine name, or `#<ordinal>` for an import by ordinal.
    pub symbol: String,
    /// RVA of this import's IAT slot (the address thunks jump through).
    pub iat_rva: u32,
    /// Whether it is a delay-load import (never acceptable in a driver).
    pub delay_load: bool,
}

/// What the gate read from an image.
#[derive(Debug, Clone)]
pub struct PeReport {
    /// `IMAGE_FILE_HEADER.Machine`.
    pub machine: u16,
    /// `IMAGE_OPTIONAL_HEADER64.Subsystem`.
    pub subsystem: u16,
    /// `IMAGE_OPTIONAL_HEADER64.DllCharacteristics`.
    pub dll_characteristics: u16,
    /// `AddressOfEntryPoint` (RVA).
    pub entry_point: u32,
    /// RVA of the exported `DriverEntry`, if exported.
    pub driver_entry_export: Option<u32>,
    /// Every import, in image order.
    pub imports: Vec<Import>,
}

impl PeReport {
    /// The imports from `dll` (case-insensitive).
    pub fn imports_from<'a>(&'a self, dll: &'a str) -> impl Iterator<Item = &'a Import> + 'a {
        self.imports
            .iter()
            .filter(move |import| import.dll.eq_ignore_ascii_case(dll))
    }

    /// The import whose IAT slot is at `iat_rva`.
    pub fn import_at_iat(&self, iat_rva: u32) -> Option<&Import> {
        self.imports.iter().find(|import| import.iat_rva == iat_rva)
    }
}

/// One reason an image fails the gate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateViolation {
    /// The file is not a PE32+ image the parser accepts.
    #[error("not a PE32+ (64-bit) image: {0}")]
    NotPe32Plus(String),
    /// `Machine` is not AMD64.
    #[error("machine is 0x{0:04X}, expected IMAGE_FILE_MACHINE_AMD64 (0x8664)")]
    WrongMachine(u16),
    /// `Subsystem` is not NATIVE.
    #[error("subsystem is {0}, expected IMAGE_SUBSYSTEM_NATIVE (1)")]
    WrongSubsystem(u16),
    /// An import from a DLL other than ntoskrnl.exe / FLTMGR.SYS.
    #[error("forbidden import {symbol} from {dll} (only ntoskrnl.exe and FLTMGR.SYS are allowed)")]
    ForbiddenImport {
        /// The offending DLL.
        dll: String,
        /// The routine imported from it.
        symbol: String,
    },
    /// A delay-load import (the kernel loader has no delay-load helper).
    #[error("delay-load import {symbol} from {dll}: drivers cannot delay-load")]
    DelayLoadImport {
        /// The DLL.
        dll: String,
        /// The routine.
        symbol: String,
    },
    /// A required routine is not imported.
    #[error("required import {0} is missing")]
    MissingImport(String),
    /// `DriverEntry` is not exported or is not the entry point.
    #[error("entry point RVA 0x{entry:X} is not the exported DriverEntry ({export})")]
    EntryPointNotDriverEntry {
        /// `AddressOfEntryPoint`.
        entry: u32,
        /// The `DriverEntry` export, or "not exported".
        export: String,
    },
    /// `IMAGE_DLLCHARACTERISTICS_NX_COMPAT` is not set.
    #[error("IMAGE_DLLCHARACTERISTICS_NX_COMPAT is not set")]
    NotNxCompatible,
}

/// All violations found in one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailure(pub Vec<GateViolation>);

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "PE gate failed ({} violation(s)):", self.0.len())?;
        for violation in &self.0 {
            writeln!(f, "  - {violation}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GateFailure {}

/// Parses `image` and lists its headers, imports and `DriverEntry` export.
///
/// # Errors
/// [`GateViolation::NotPe32Plus`] if the parser rejects the file (truncated, PE32,
/// malformed directories).
pub fn inspect(image: &[u8]) -> Result<PeReport, GateViolation> {
    let bad = |error: object::Error| GateViolation::NotPe32Plus(error.to_string());
    let file = PeFile64::parse(image).map_err(bad)?;
    let nt = file.nt_headers();
    let optional = nt.optional_header();

    let mut imports = Vec::new();
    if let Some(table) = file.import_table().map_err(bad)? {
        let mut descriptors = table.descriptors().map_err(bad)?;
        while let Some(descriptor) = descriptors.next().map_err(bad)? {
            let dll = String::from_utf8_lossy(table.name(descriptor.name.get(LE)).map_err(bad)?)
                .into_owned();
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                rva => rva,
            };
            let iat_start = descriptor.first_thunk.get(LE);
            let mut thunks = table.thunks(lookup).map_err(bad)?;
            let mut index = 0u32;
            while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().map_err(bad)? {
                let symbol = match table.import::<pe::ImageNtHeaders64>(thunk).map_err(bad)? {
                    object::read::pe::Import::Name(_, name) => {
                        String::from_utf8_lossy(name).into_owned()
                    }
                    object::read::pe::Import::Ordinal(ordinal) => format!("#{ordinal}"),
                };
                imports.push(Import {
                    dll: dll.clone(),
                    symbol,
                    iat_rva: iat_start + index * 8,
                    delay_load: false,
                });
                index += 1;
            }
        }
    }
    let delay_table = file
        .data_directories()
        .delay_load_import_table(image, &file.section_table())
        .map_err(bad)?;
    if let Some(table) = delay_table {
        let mut descriptors = table.descriptors().map_err(bad)?;
        while let Some(descriptor) = descriptors.next().map_err(bad)? {
            let dll =
                String::from_utf8_lossy(table.name(descriptor.dll_name_rva.get(LE)).map_err(bad)?)
                    .into_owned();
            let iat_start = descriptor.import_address_table_rva.get(LE);
            let mut thunks = table
                .thunks(descriptor.import_name_table_rva.get(LE))
                .map_err(bad)?;
            let mut index = 0u32;
            while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>().map_err(bad)? {
                let symbol = match table.import::<pe::ImageNtHeaders64>(thunk).map_err(bad)? {
                    object::read::pe::Import::Name(_, name) => {
                        String::from_utf8_lossy(name).into_owned()
                    }
                    object::read::pe::Import::Ordinal(ordinal) => format!("#{ordinal}"),
                };
                imports.push(Import {
                    dll: dll.clone(),
                    symbol,
                    iat_rva: iat_start + index * 8,
                    delay_load: true,
                });
                index += 1;
            }
        }
    }

    let mut driver_entry_export = None;
    if let Some(exports) = file.export_table().map_err(bad)? {
        for export in exports.exports().map_err(bad)? {
            if export.name == Some(b"DriverEntry".as_slice()) {
                if let object::read::pe::ExportTarget::Address(rva) = export.target {
                    driver_entry_export = Some(rva);
                }
            }
        }
    }

    Ok(PeReport {
        machine: nt.file_header().machine.get(LE),
        subsystem: optional.subsystem(),
        dll_characteristics: optional.dll_characteristics(),
        entry_point: optional.address_of_entry_point(),
        driver_entry_export,
        imports,
    })
}

/// Runs every check on `image` and returns the report, or all violations at once.
///
/// # Errors
/// [`GateFailure`] listing each [`GateViolation`], naming the offending DLL and routine.
pub fn check_driver_image(image: &[u8]) -> Result<PeReport, GateFailure> {
    let report = inspect(image).map_err(|violation| GateFailure(vec![violation]))?;
    let mut violations = Vec::new();
    if report.machine != pe::IMAGE_FILE_MACHINE_AMD64 {
        violations.push(GateViolation::WrongMachine(report.machine));
    }
    if report.subsystem != pe::IMAGE_SUBSYSTEM_NATIVE {
        violations.push(GateViolation::WrongSubsystem(report.subsystem));
    }
    if report.dll_characteristics & pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT == 0 {
        violations.push(GateViolation::NotNxCompatible);
    }
    if report.driver_entry_export != Some(report.entry_point) {
        violations.push(GateViolation::EntryPointNotDriverEntry {
            entry: report.entry_point,
            export: report
                .driver_entry_export
                .map_or_else(|| "not exported".to_owned(), |rva| format!("RVA 0x{rva:X}")),
        });
    }
    for import in &report.imports {
        if import.delay_load {
            violations.push(GateViolation::DelayLoadImport {
                dll: import.dll.clone(),
                symbol: import.symbol.clone(),
            });
        } else if !ALLOWED_DLLS
            .iter()
            .any(|allowed| import.dll.eq_ignore_ascii_case(allowed))
        {
            violations.push(GateViolation::ForbiddenImport {
                dll: import.dll.clone(),
                symbol: import.symbol.clone(),
            });
        }
    }
    for required in REQUIRED_IMPORTS {
        if !report
            .imports
            .iter()
            .any(|import| !import.delay_load && import.symbol == *required)
        {
            violations.push(GateViolation::MissingImport((*required).to_owned()));
        }
    }
    if violations.is_empty() {
        Ok(report)
    } else {
        Err(GateFailure(violations))
    }
}
