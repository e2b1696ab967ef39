//! Command implementations, one module per command: each reads its arguments, talks to
//! a [`port::Client`] (or needs none), and prints a table or JSON. [`run`] dispatches.

mod durability;
mod events;
mod explain;
mod load;
mod policy;
mod replay_cmd;
mod stats;
mod status;

use events::events;
use explain::policy_explain;
pub use policy::load_policy_file;
use policy::{policy_apply, policy_check, policy_show};
use replay_cmd::replay;
pub use replay_cmd::{replay_file, replay_filter};
use stats::stats;
use status::status;

use clap::CommandFactory;

use crate::cli::{Cli, Command, PolicyCommand};
use crate::error::CliError;
use crate::exit;
use crate::port::{self, PortOptions};
use durability::durability;

/// Runs the parsed command line; returns the exit code.
///
/// # Errors
/// Every [`CliError`]; the caller prints it and exits with [`CliError::exit_code`].
pub fn run(cli: Cli) -> Result<u8, CliError> {
    if let Some(s) = &cli.simulate {
        port::inproc::Simulation::parse(s).map_err(CliError::Usage)?;
        if !cli.offline {
            return Err(CliError::Usage(
                "--simulate / FLUSHCTL_SIMULATE only applies to --offline".into(),
            ));
        }
    }
    let opts = PortOptions {
        offline: cli.offline,
        state: cli.state.clone(),
        simulate: cli.simulate.clone(),
        command: command_label(&cli.command),
    };
    let json = cli.json;
    match cli.command {
        Command::Status => status(&opts, json),
        Command::Policy(PolicyCommand::Show) => policy_show(&opts, json),
        Command::Policy(PolicyCommand::Apply { file, persist }) => {
            policy_apply(&opts, &file, persist, json)
        }
        Command::Policy(PolicyCommand::Check { file }) => policy_check(&file, json),
        Command::Policy(PolicyCommand::Explain(args)) => policy_explain(&opts, &args, json),
        Command::Stats(args) => stats(&opts, &args, json),
        Command::Events(args) => events(&opts, &args, json),
        Command::Load => load::load_unload(&opts, true, json),
        Command::Unload => load::load_unload(&opts, false, json),
        Command::Replay(args) => replay(&opts, &args, json),
        Command::Durability(cmd) => durability(&cmd, json),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "flushctl", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::GenTrace(args) => {
            crate::gen::run(&args)
                .map_err(|e| CliError::io(format!("writing {}", args.out.display()), e))?;
            Ok(exit::OK)
        }
    }
}

fn command_label(c: &Command) -> String {
    match c {
        Command::Status => "flushctl status".into(),
        Command::Policy(PolicyCommand::Show) => "flushctl policy show".into(),
        Command::Policy(PolicyCommand::Apply { .. }) => "flushctl policy apply".into(),
        Command::Policy(PolicyCommand::Check { .. }) => "flushctl policy check".into(),
        Command::Policy(PolicyCommand::Explain(_)) => {
            "flushctl policy explain (without --policy)".into()
        }
        Command::Stats(_) => "flushctl stats".into(),
        Command::Events(_) => "flushctl events".into(),
        Command::Load => "flushctl load".into(),
        Command::Unload => "flushctl unload".into(),
        Command::Replay(_) => "flushctl replay (without --policy)".into(),
        Command::Durability(_) => "flushctl durability".into(),
        Command::Completions { .. } => "flushctl completions".into(),
        Command::GenTrace(_) => "flushctl gen-trace".into(),
    }
}
