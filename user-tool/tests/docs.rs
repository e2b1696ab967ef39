//! The README and `docs/*.md` examples still hold: every fenced block is extracted and
//!
//! - a ` ```toml ` block is a complete policy that `flushctl policy check` accepts (exit 0);
//! - a ` ```toml rejected ` block is a policy `flushctl policy check` refuses (exit 7), and
//!   the ` ```text ` block right after it is the error message it prints;
//! - in ` ```sh ` / ` ```bash ` blocks, every `flushctl ...` or `cargo run ... -p flushctl --
//!   ...` command line parses with flushctl's clap definition (`Cli::try_parse_from`);
//! - every relative link points at a file of the repository;
//! - the README stays a front door (at most 12 KiB).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use clap::Parser;
use flushctl::cli::Cli;

/// One fenced code block of a markdown file.
struct Block {
    /// The markdown file.
    file: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    /// The info string after the fence (e.g. `toml rejected`).
    info: String,
    /// The lines between the fences, each ending in `\n`.
    text: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("user-tool has a parent")
        .to_path_buf()
}

/// README.md and every docs/*.md, sorted.
fn pages() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.sort();
    v.insert(0, repo().join("README.md"));
    v
}

fn blocks(file: &Path) -> Vec<Block> {
    let src = std::fs::read_to_string(file).expect("readable page");
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in src.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    file: file.to_path_buf(),
                    line: i + 1,
                    info: info.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                out.push(open.take().expect("open block"))
            }
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{}: unclosed code block", file.display());
    out
}

fn all_blocks() -> Vec<Block> {
    pages().iter().flat_map(|p| blocks(p)).collect()
}

fn whence(b: &Block) -> String {
    format!("{}:{}", b.file.display(), b.line)
}

fn policy_check(text: &str) -> assert_cmd::assert::Assert {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    Command::cargo_bin("flushctl")
        .expect("flushctl binary")
        .args(["policy", "check"])
        .arg(&path)
        .env_remove("FLUSHCTL_STATE")
        .env_remove("FLUSHCTL_SIMULATE")
        .assert()
}

#[test]
fn policy_blocks_pass_policy_check() {
    let mut n = 0;
    for b in all_blocks().iter().filter(|b| b.info == "toml") {
        let out = policy_check(&b.text).get_output().clone();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: policy block rejected by `flushctl policy check`: {}",
            whence(b),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    // README's short tour and docs/policy.md's full example at least.
    assert!(n >= 2, "only {n} policy blocks found");
}

#[test]
fn rejected_policy_blocks_print_the_documented_error() {
    let all = all_blocks();
    let mut n = 0;
    for (i, b) in all.iter().enumerate() {
        if b.info != "toml rejected" {
            continue;
        }
        let expected = all
            .get(i + 1)
            .filter(|t| t.info == "text" && t.file == b.file)
            .unwrap_or_else(|| panic!("{}: no ```text block after it", whence(b)));
        let out = policy_check(&b.text).get_output().clone();
        assert_eq!(
            out.status.code(),
            Some(7),
            "{}: expected exit 7 (invalid input)",
            whence(b)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = expected.text.trim_end();
        assert!(
            stderr.trim_end().ends_with(message),
            "{}: documented error\n  {message}\nbut flushctl printed\n  {stderr}",
            whence(b)
        );
        n += 1;
    }
    assert!(n >= 3, "only {n} rejected-policy examples found");
}

/// The command lines of a shell block: continuation lines joined, comments dropped (by
/// shlex), split on `&&`, `||`, `;` and `|`.
fn commands(text: &str) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let words = shlex::split(line).unwrap_or_else(|| panic!("unbalanced quotes: {line}"));
        let mut cmd = Vec::new();
        for w in words {
            if ["&&", "||", ";", "|"].contains(&w.as_str()) {
                out.push(std::mem::take(&mut cmd));
            } else {
                cmd.push(w);
            }
        }
        out.push(cmd);
    }
    out.retain(|c| !c.is_empty());
    out
}

/// `flushctl ARGS` or `cargo run ... -p flushctl -- ARGS` as flushctl's argv.
fn flushctl_argv(cmd: &[String]) -> Option<Vec<String>> {
    if cmd[0] == "flushctl" {
        return Some(cmd.to_vec());
    }
    let is_cargo_run = cmd.len() > 2 && cmd[0] == "cargo" && cmd[1] == "run";
    let names_flushctl = cmd.windows(2).any(|w| w[0] == "-p" && w[1] == "flushctl");
    if is_cargo_run && names_flushctl {
        let dash = cmd.iter().position(|w| w == "--")?;
        let mut argv = vec!["flushctl".to_owned()];
        argv.extend(cmd[dash + 1..].iter().cloned());
        return Some(argv);
    }
    None
}

#[test]
fn flushctl_command_lines_parse() {
    let mut n = 0;
    for b in all_blocks()
        .iter()
        .filter(|b| b.info == "sh" || b.info == "bash")
    {
        for cmd in commands(&b.text) {
            let Some(argv) = flushctl_argv(&cmd) else {
                continue;
            };
            if let Err(e) = Cli::try_parse_from(&argv) {
                panic!("{}: `{}` does not parse:\n{e}", whence(b), argv.join(" "));
            }
            n += 1;
        }
    }
    // docs/flushctl.md has an example of every command.
    assert!(n >= 15, "only {n} flushctl command lines found");
}

#[test]
fn relative_links_point_at_files() {
    for page in pages() {
        let src = std::fs::read_to_string(&page).expect("readable page");
        for (start, _) in src.match_indices("](") {
            let rest = &src[start + 2..];
            let target = &rest[..rest.find(')').expect("closed link")];
            if target.contains("://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap_or(target);
            let base = page.parent().expect("page in a folder");
            assert!(
                base.join(path).exists(),
                "{}: link to {target}: no such file",
                page.display()
            );
        }
    }
}

#[test]
fn readme_is_a_front_door() {
    let len = std::fs::metadata(repo().join("README.md"))
        .expect("README.md")
        .len();
    assert!(
        len <= 12 * 1024,
        "README.md is {len} bytes; reference belongs in docs/"
    );
    let src = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    for page in [
        "policy.md",
        "flushctl.md",
        "statistics.md",
        "testing.md",
        "build.md",
    ] {
        assert!(
            src.contains(&format!("(docs/{page})")),
            "README does not link docs/{page}"
        );
    }
}
