//! The `fulcrum` command.

mod balance;
mod bgp_status;
mod capabilities;
mod client;
mod decap;
mod flow_status;
mod foreground;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fulcrum", version, about = "Layer 4 load balancer in XDP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Balance one service across backends until Ctrl-C (L2 DSR).
    Balance(balance::Args),
    /// Strip IP-in-IP and GUE from packets to this host (run on backends of L3 DSR).
    Decap(decap::Args),
    /// Run the daemon: configuration file, health checks, API, metrics, console.
    Run(run::Args),
    /// Show the services and backends of a running daemon: health, drain, rates.
    Status(client::StatusArgs),
    /// Drain a backend: it takes no new flows; its flows continue.
    Drain(client::BackendArgs),
    /// Undrain a backend: it takes new flows again while healthy.
    Undrain(client::BackendArgs),
    /// Make a running daemon read its configuration file again and apply the difference.
    Reload(client::ReloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon tells its story at info; one-shot commands only warn.
    let default_filter = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FULCRUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Balance(args) => balance::run(args),
        Command::Decap(args) => decap::run(args),
        Command::Run(args) => run::run(args),
        Command::Status(args) => client::status(args),
        Command::Drain(args) => client::drain(args, true),
        Command::Undrain(args) => client::drain(args, false),
        Command::Reload(args) => client::reload(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// One line: the error and each cause, outermost first.
fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
