//! `crashfs BACKING MOUNTPOINT [--sync-backing]`: the crash model of FlushGuard's
//! durability tests, a FUSE file system over the directory BACKING that keeps written
//! data in memory until fsync / fdatasync / an O_SYNC or O_DSYNC write makes it durable,
//! and drops it on `echo crash > MOUNTPOINT/.crashfs`. Runs in the foreground until
//! `umount MOUNTPOINT`. Linux only; mounting needs root (no fusermount is used).
//!
//! What it models and what it does not: see `fs.rs` and docs/testing.md.
#![forbid(unsafe_code)]

#[cfg(target_os = "linux")]
mod fs;
#[cfg(target_os = "linux")]
mod model;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let sync_backing = args.iter().any(|a| a == "--sync-backing");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [backing, mountpoint] = paths[..] else {
        eprintln!("usage: crashfs BACKING MOUNTPOINT [--sync-backing]");
        return ExitCode::from(2);
    };
    let backing = match std::fs::canonicalize(backing) {
        Ok(p) if p.is_dir() => p,
        _ => {
            eprintln!("crashfs: {backing}: not a directory");
            return ExitCode::from(2);
        }
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options.extend([
        fuser::MountOption::FSName("crashfs".into()),
        fuser::MountOption::DefaultPermissions,
    ]);
    cfg.n_threads = Some(2);
    match fuser::mount(fs::CrashFs::new(backing, sync_backing), mountpoint, &cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crashfs: mounting {mountpoint}: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("crashfs: Linux only (FUSE)");
    std::process::ExitCode::from(6)
}
