//! `arena`: thin entry point — telemetry, configuration, then the command.

use clap::Parser;

use arena::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    arena::telemetry::init(&cli.settings.log, cli.settings.log_json);
    arena::cli::run(cli.command.unwrap_or(Command::Serve), cli.settings).await
}
