//! The PE gate of `cargo xtask package` really rejects bad driver images.
//!
//! Each case links a real PE image with rust-lld (lld-link flavour) from a tiny COFF
//! object written with the `object` crate, against import libraries made by
//! `llvm-dlltool`, exactly like a driver is linked, then runs the gate on it:
//! - a well-formed driver image passes (the gate is not rejecting everything);
//! - an image importing `ZwFlushBuffersFileEx` from `ntdll.dll` (the windows-sys link
//!   trap, DESIGN.md section 3) fails, naming the DLL and the routine;
//! - a console-subsystem image and an image missing the Filter Manager imports fail too.
//!
//! Needs rust-lld (from the Rust toolchain) and llvm-dlltool (Debian `llvm`), which
//! `scripts/setup.sh` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SymbolFlags, SymbolKind, SymbolScope,
};
use xtask::pe::{check_driver_image, GateViolation, REQUIRED_IMPORTS};

/// Filter Manager routines every good image imports.
const FLTMGR_IMPORTS: &[&str] = &[
    "FltRegisterFilter",
    "FltStartFiltering",
    "FltUnregisterFilter",
    "FltCreateCommunicationPort",
    "FltCloseCommunicationPort",
    "FltBuildDefaultSecurityDescriptor",
];

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("pe_gate")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error} (run scripts/setup.sh)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A COFF object whose exported `DriverEntry` calls every `(dll, routine)` through its
/// `__imp_` pointer (`call [rip+__imp_X]`), then returns 0.
fn driver_object(imports: &[(&str, &str)]) -> Vec<u8> {
    let mut object = Object::new(BinaryFormat::Coff, Architecture::X86_64, Endianness::Little);
    let text = object.section_id(StandardSection::Text);
    let mut code = Vec::new();
    let mut fixups = Vec::new();
    code.extend_from_slice(&[0x48, 0x83, 0xEC, 0x28]); // sub rsp, 40
    for (_, routine) in imports {
        fixups.push((code.len() + 2, format!("__imp_{routine}")));
        code.extend_from_slice(&[0xFF, 0x15, 0, 0, 0, 0]); // call [rip+disp32]
    }
    code.extend_from_slice(&[0x31, 0xC0, 0x48, 0x83, 0xC4, 0x28, 0xC3]); // xor eax,eax; add rsp,40; ret
    let offset = object.append_section_data(text, &code, 16);
    object.add_symbol(Symbol {
        name: b"DriverEntry".to_vec(),
        value: offset,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    for (at, name) in fixups {
        let symbol = object.add_symbol(Symbol {
            name: name.into_bytes(),
            value: 0,
            size: 0,
            kind: SymbolKind::Data,
            scope: SymbolScope::Unknown,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        object
            .add_relocation(
                text,
                Relocation {
                    offset: offset + at as u64,
                    symbol,
                    addend: 0,
                    flags: RelocationFlags::Coff {
                        typ: object::pe::IMAGE_REL_AMD64_REL32,
                    },
                },
            )
            .unwrap();
    }
    object.write().unwrap()
}

/// Links `imports` into an image with the kernel-driver link arguments of build.rs
/// (`subsystem` replaces `/SUBSYSTEM:NATIVE` when given).
fn link_image(dir: &Path, imports: &[(&str, &str)], subsystem: &str) -> Vec<u8> {
    let object_path = dir.join("driver.obj");
    std::fs::write(&object_path, driver_object(imports)).unwrap();
    let mut libraries = Vec::new();
    let mut dlls: Vec<&str> = imports.iter().map(|(dll, _)| *dll).collect();
    dlls.sort_unstable();
    dlls.dedup();
    for dll in dlls {
        let routines: Vec<&str> = imports
            .iter()
            .filter(|(d, _)| *d == dll)
            .map(|(_, routine)| *routine)
            .collect();
        let def = dir.join(format!("{dll}.def"));
        let lib = dir.join(format!("{dll}.lib"));
        std::fs::write(
            &def,
            format!("LIBRARY {dll}\nEXPORTS\n{}\n", routines.join("\n")),
        )
        .unwrap();
        run(Command::new("llvm-dlltool")
            .args(["-m", "i386:x86-64", "-d"])
            .arg(&def)
            .arg("-l")
            .arg(&lib));
        libraries.push(lib);
    }
    let image = dir.join("image.sys");
    run(Command::new(xtask::tools::rust_lld().expect("rust-lld"))
        .args(["-flavor", "link", "/NOLOGO", "/DLL", "/DRIVER"])
        .arg(subsystem)
        .args([
            "/ENTRY:DriverEntry",
            "/EXPORT:DriverEntry",
            "/NODEFAULTLIB",
            "/RELEASE",
        ])
        .arg(format!("/OUT:{}", image.display()))
        .arg(&object_path)
        .args(&libraries));
    std::fs::read(image).unwrap()
}

/// The imports of a correct FlushGuard image.
fn good_imports() -> Vec<(&'static str, &'static str)> {
    let mut imports: Vec<_> = FLTMGR_IMPORTS.iter().map(|r| ("FLTMGR.SYS", *r)).collect();
    imports.push(("ntoskrnl.exe", "__C_specific_handler"));
    imports.push(("ntoskrnl.exe", "DbgPrintEx"));
    imports
}

#[test]
fn well_formed_driver_image_passes() {
    let image = link_image(&scratch("good"), &good_imports(), "/SUBSYSTEM:NATIVE");
    let report = check_driver_image(&image).unwrap_or_else(|failure| panic!("{failure}"));
    for required in REQUIRED_IMPORTS {
        assert!(report
            .imports
            .iter()
            .any(|import| import.symbol == *required));
    }
}

#[test]
fn image_importing_from_ntdll_fails_naming_dll_and_routine() {
    let mut imports = good_imports();
    imports.push(("ntdll.dll", "ZwFlushBuffersFileEx"));
    let image = link_image(&scratch("ntdll"), &imports, "/SUBSYSTEM:NATIVE");
    let failure = check_driver_image(&image).expect_err("ntdll.dll import must fail the gate");
    assert_eq!(
        failure.0,
        vec![GateViolation::ForbiddenImport {
            dll: "ntdll.dll".to_owned(),
            symbol: "ZwFlushBuffersFileEx".to_owned(),
        }]
    );
    let message = failure.to_string();
    assert!(message.contains("ntdll.dll") && message.contains("ZwFlushBuffersFileEx"));
}

#[test]
fn console_subsystem_image_fails() {
    let image = link_image(&scratch("console"), &good_imports(), "/SUBSYSTEM:CONSOLE");
    let failure = check_driver_image(&image).expect_err("console subsystem must fail");
    assert!(failure.0.contains(&GateViolation::WrongSubsystem(3)));
}

#[test]
fn image_without_filter_manager_registration_fails() {
    let imports = [("ntoskrnl.exe", "__C_specific_handler")];
    let image = link_image(&scratch("no-fltmgr"), &imports, "/SUBSYSTEM:NATIVE");
    let failure = check_driver_image(&image).expect_err("missing imports must fail");
    for routine in FLTMGR_IMPORTS {
        assert!(
            failure
                .0
                .contains(&GateViolation::MissingImport((*routine).to_owned())),
            "{routine} not reported: {failure}"
        );
    }
}

#[test]
fn non_pe_input_fails() {
    let failure = check_driver_image(b"MZ not really a PE").expect_err("garbage must fail");
    assert!(matches!(
        failure.0.as_slice(),
        [GateViolation::NotPe32Plus(_)]
    ));
}
