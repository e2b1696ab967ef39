//! The unwind-info check of `cargo xtask package` (xtask/src/unwind.rs) accepts the real
//! SEH copy shim and rejects a shim whose `__try` clang dropped.
//!
//! Each case compiles C with clang for `x86_64-pc-windows-msvc`, links a small DLL with
//! rust-lld (`/MAP`, both shim routines kept with `/INCLUDE`) against an import library
//! made by llvm-dlltool, and runs the check on the linked image:
//! - `driver/seh/seh_copy.c` itself, with `__C_specific_handler` from ntoskrnl.exe:
//!   passes, and `llvm-readobj --unwind` shows the same handler;
//! - a shim that copies inline inside `__try` (clang then drops the handler and, the
//!   routine being a leaf, all its unwind info): fails with `NoRuntimeFunction`;
//! - the real shim linked against `ntdll.dll`'s `__C_specific_handler`: fails with
//!   `WrongHandler` (a driver must take it from ntoskrnl.exe).
//!
//! The wine run of the same shim is `cargo xtask seh-test` (part of scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::unwind::{check_seh_handlers, image_base, readobj_handler_va, LinkerMap, UnwindError};

/// A shim with the copy loop inline in the `__try` body: clang drops the handler.
const INLINE_SHIM: &str = r#"
typedef long NTSTATUS;
typedef unsigned long long SIZE_T;
NTSTATUS fg_copy_from_user(void *dst, const void *src, SIZE_T len)
{
    NTSTATUS status = 0;
    __try {
        SIZE_T i;
        for (i = 0; i < len; i++)
            ((volatile unsigned char *)dst)[i] = ((const volatile unsigned char *)src)[i];
    } __except (1) {
        status = (NTSTATUS)0xC0000005L;
    }
    return status;
}
NTSTATUS fg_copy_to_user(void *dst, const void *src, SIZE_T len)
{
    return fg_copy_from_user(dst, src, len);
}
"#;

const SHIM_FUNCTIONS: &[&str] = &["fg_copy_from_user", "fg_copy_to_user"];

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("seh_unwind")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error} (run scripts/setup.sh)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Compiles `source` and links it into `dir/image.dll` with `__C_specific_handler`
/// imported from `handler_dll`; returns (image bytes, map, image path).
fn link_shim(dir: &Path, source: &Path, handler_dll: &str) -> (Vec<u8>, LinkerMap, PathBuf) {
    let object = dir.join("shim.obj");
    run(Command::new("clang")
        .args([
            "--target=x86_64-pc-windows-msvc",
            "-O2",
            "-fno-stack-protector",
            "-c",
        ])
        .arg(source)
        .arg("-o")
        .arg(&object));
    let def = dir.join("handler.def");
    let lib = dir.join("handler.lib");
    std::fs::write(
        &def,
        format!("LIBRARY {handler_dll}\nEXPORTS\n__C_specific_handler\n"),
    )
    .unwrap();
    run(Command::new("llvm-dlltool")
        .args(["-m", "i386:x86-64", "-d"])
        .arg(&def)
        .arg("-l")
        .arg(&lib));
    let image_path = dir.join("image.dll");
    let map_path = dir.join("image.map");
    run(Command::new(xtask::tools::rust_lld().expect("rust-lld"))
        .args([
            "-flavor",
            "link",
            "/NOLOGO",
            "/DLL",
            "/NOENTRY",
            "/NODEFAULTLIB",
        ])
        .args(["/INCLUDE:fg_copy_from_user", "/INCLUDE:fg_copy_to_user"])
        .arg(format!("/MAP:{}", map_path.display()))
        .arg(format!("/OUT:{}", image_path.display()))
        .arg(&object)
        .arg(&lib));
    let image = std::fs::read(&image_path).unwrap();
    let map = LinkerMap::parse(
        &std::fs::read_to_string(&map_path).unwrap(),
        image_base(&image).unwrap(),
    );
    (image, map, image_path)
}

fn shim_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../driver/seh/seh_copy.c")
}

#[test]
fn real_shim_keeps_ntoskrnl_c_specific_handler() {
    let dir = scratch("real");
    let (image, map, path) = link_shim(&dir, &shim_source(), "ntoskrnl.exe");
    let report = xtask::pe::inspect(&image).unwrap();
    let checks = check_seh_handlers(&image, &report, &map, SHIM_FUNCTIONS)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(checks.len(), 2);
    let readobj = run(Command::new("llvm-readobj").arg("--unwind").arg(&path));
    let base = image_base(&image).unwrap();
    for check in checks {
        assert_eq!(check.handler_import, "ntoskrnl.exe!__C_specific_handler");
        assert!(check.scope_count >= 1);
        assert_eq!(
            readobj_handler_va(&readobj, base + u64::from(check.begin)),
            Some(base + u64::from(check.handler_rva)),
            "llvm-readobj disagrees for {}",
            check.function
        );
    }
}

#[test]
fn inline_copy_in_try_is_rejected() {
    let dir = scratch("inline");
    let source = dir.join("inline.c");
    std::fs::write(&source, INLINE_SHIM).unwrap();
    let (image, map, _) = link_shim(&dir, &source, "ntoskrnl.exe");
    let report = xtask::pe::inspect(&image).unwrap();
    assert_eq!(
        check_seh_handlers(&image, &report, &map, SHIM_FUNCTIONS),
        Err(UnwindError::NoRuntimeFunction(
            "fg_copy_from_user".to_owned()
        ))
    );
}

#[test]
fn handler_from_ntdll_is_rejected() {
    let dir = scratch("ntdll");
    let (image, map, _) = link_shim(&dir, &shim_source(), "ntdll.dll");
    let report = xtask::pe::inspect(&image).unwrap();
    assert_eq!(
        check_seh_handlers(&image, &report, &map, SHIM_FUNCTIONS),
        Err(UnwindError::WrongHandler {
            function: "fg_copy_from_user".to_owned(),
            found: "ntdll.dll!__C_specific_handler".to_owned(),
        })
    );
}
