//! `arena`: thin entry point — telemetry, configuration, then the command.

use clap::Parser;

use arena::config::{Cli, Command};

// mimalloc: a request allocates and frees many small objects, which glibc's allocator spends
// a sixth of the CPU of a cached read on (profile in the README's benchmarks). Built without
// transparent huge pages (`no_thp`, see Cargo.toml), which multiplied the resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    arena::telemetry::init(&cli.settings.log, cli.settings.log_json);
    arena::cli::run(cli.command.unwrap_or(Command::Serve), cli.settings).await
}
